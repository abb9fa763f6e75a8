//! `isolate-image`: unpack a rootfs tarball or import an image, reporting JSON lines on stdout.
//! See `isolate_image::tool`.

/// Every heap byte of the process counts against a budget (see `isolate_image::budget`).
#[global_allocator]
static ALLOC: isolate_image::budget::Budgeted = isolate_image::budget::Budgeted::new(isolate_image::budget::BUDGET);

fn main() {
    std::process::exit(isolate_image::tool::main(std::env::args().skip(1).collect()));
}
