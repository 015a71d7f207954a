//! The glommio runtime: the only module that names glommio (DESIGN §1, §12), so the
//! runtime can be swapped and the sans-I/O core never sees it.
//!
//! Owns: executor setup ([`LocalRuntime`], [`run_local`]) and the drivers that execute the sans-I/O
//! layers' commands on real files ([`dma_wal`]). Each executor is one core; what
//! runs inside it stays on that core.
//!
//! The pinned crate is `glommio-ng` 0.12.0 (the community fork; upstream 0.9.0 has
//! a DMA read bug on this machine, DESIGN §12), imported under the name `glommio`.

pub mod core_driver;
pub mod dma_wal;
pub mod handoff_board;
pub mod join;
pub mod map_file;
pub mod server;
mod snap_files;

use std::future::Future;

pub use dma_wal::{DmaWal, WalStats, dma_write_fdatasync_probe};

/// Why an executor could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Executor setup failed for lack of locked memory.
    #[error(
        "cannot start executor {name}: {source}; glommio locks io_memory (default 10 MiB) and needs \
         RLIMIT_MEMLOCK >= 512 KiB: raise it (`ulimit -l`, LimitMEMLOCK= in systemd) or use a smaller io_memory"
    )]
    MemLock {
        /// The executor.
        name: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Any other setup failure.
    #[error("cannot start executor {name}: {source}")]
    Setup {
        /// The executor.
        name: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A glommio executor on the calling thread, unpinned, parking when idle (no
/// busy-polling, DESIGN §1.7). Futures run one [`LocalRuntime::block_on`] at a
/// time; files opened in one call stay usable in the next (same reactor).
pub struct LocalRuntime {
    executor: glommio::LocalExecutor,
}

impl std::fmt::Debug for LocalRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRuntime").finish_non_exhaustive()
    }
}

impl LocalRuntime {
    /// Starts the executor. Lack of locked memory gets an error that says how to fix it.
    pub fn new(name: &str) -> Result<Self, RuntimeError> {
        let executor =
            glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).name(name).make().map_err(|e| {
                let source = std::io::Error::from(e);
                let memlock = source.raw_os_error() == Some(12) // ENOMEM
                    || source.to_string().contains("MemLock");
                if memlock {
                    RuntimeError::MemLock { name: name.to_string(), source }
                } else {
                    RuntimeError::Setup { name: name.to_string(), source }
                }
            })?;
        Ok(LocalRuntime { executor })
    }

    /// Runs `future` to completion on this executor.
    pub fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
        self.executor.run(future)
    }
}

/// Starts `future` as a task of the current executor (inside [`LocalRuntime::block_on`]
/// or a server core); awaiting the result yields its output, dropping it cancels it.
pub fn spawn_local<T: 'static>(future: impl Future<Output = T> + 'static) -> impl Future<Output = T> {
    glommio::spawn_local(future)
}

/// Waits `d` on the current executor's timer (no busy-polling).
pub async fn sleep(d: std::time::Duration) {
    glommio::timer::sleep(d).await
}

/// Runs `future` to completion on a new [`LocalRuntime`].
pub fn run_local<T>(name: &str, future: impl Future<Output = T>) -> Result<T, RuntimeError> {
    Ok(LocalRuntime::new(name)?.block_on(future))
}
