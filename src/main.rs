use std::process::ExitCode;

fn main() -> ExitCode {
    keep_freed_memory();
    match sam_cobot::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Tensors of hundreds of MB are allocated and freed in every layer. By default glibc serves
/// them with `mmap` and returns them to the kernel on free, so every layer page-faults its
/// memory back in (17% of a 1024 px inference). Serving them from the heap and never trimming
/// it lets freed blocks be reused: the peak stays the same, the time drops by a quarter.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; it is called before any other thread
    // exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}
