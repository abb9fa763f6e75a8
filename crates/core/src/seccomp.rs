//! Seccomp: the default profile and OCI/Docker JSON profiles compiled to classic BPF, and loading.
