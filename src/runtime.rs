//! The tokio runtime that blocking code (steps on their threads, the object
//! store, network warehouses) drives async clients on. It is the process's
//! own, never the caller's: `block_on` from inside another runtime's task
//! would panic, so async callers hand blocking work to `spawn_blocking` and
//! that work uses this runtime.

/// The process's runtime for blocking callers (two I/O threads).
pub fn handle() -> tokio::runtime::Handle {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sluice-io")
            .enable_all()
            .build()
            .expect("a tokio runtime starts")
    })
    .handle()
    .clone()
}
