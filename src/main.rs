use std::process::ExitCode;

fn main() -> ExitCode {
    // Die quietly when stdout is closed early (`pyramidclip tokenize ... | head`), like other
    // command-line tools, instead of reporting a failed write.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        // The encoders allocate many short-lived multi-megabyte tensors; glibc would map and
        // unmap each one (page faults on every op). Keep freed memory in the heap instead.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
    pyramidclip::run(std::env::args_os())
}
