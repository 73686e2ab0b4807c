use std::process::ExitCode;

fn main() -> ExitCode {
    keep_freed_memory();
    quiet_wayland_probe();
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
/// One arena for all threads: a worker thread's own arena grows in 64 MB heaps that glibc
/// unmaps as soon as they empty, and serves anything larger with `mmap` whatever `M_MMAP_MAX`
/// says, so tensors the workers allocate were faulted in afresh every time (a 64-prompt decoder
/// batch on ViT-B at 1024 px spent half its time in the kernel, and ran twice as long).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; it is called before any other thread
    // exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}

/// Starting a wgpu device probes for a Wayland display, and libwayland prints "XDG_RUNTIME_DIR
/// is invalid or not set" for every probe when that variable is unset (services, CI, ssh
/// sessions). Without it no Wayland display can be reached anyway, so the probe is pointed at a
/// path that cannot exist and fails quietly.
fn quiet_wayland_probe() {
    #[cfg(all(target_os = "linux", any(feature = "vulkan", feature = "wgpu")))]
    if std::env::var_os("XDG_RUNTIME_DIR").is_none()
        && std::env::var_os("WAYLAND_DISPLAY").is_none()
    {
        // SAFETY: called first thing in `main`, before any other thread exists.
        unsafe { std::env::set_var("WAYLAND_DISPLAY", "/dev/null/no-wayland") };
    }
}
