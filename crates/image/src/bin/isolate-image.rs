//! `isolate-image`: unpack a rootfs tarball or import an image, reporting JSON lines on stdout.
//! See `isolate_image::tool`.

fn main() {
    std::process::exit(isolate_image::tool::main(std::env::args().skip(1).collect()));
}
