//! The corekv driver: the async client library on a glommio executor.

use std::future::Future;
use std::time::Duration;

use corekv_rpc::client::{Client, KvError};

use crate::runner::{Answer, Driver, Runtime};

/// One corekv client (one client id, one connection per server core).
#[derive(Debug, Clone)]
pub struct CorekvDriver {
    client: Client,
}

impl CorekvDriver {
    /// Drives `client`.
    pub fn new(client: Client) -> CorekvDriver {
        CorekvDriver { client }
    }
}

fn failed(e: KvError) -> Answer {
    Answer::err(e.word())
}

impl Driver for CorekvDriver {
    async fn read(&self, key: &[u8]) -> Answer {
        match self.client.get(key, None).await {
            Ok(got) => Answer::value(Some(got.version), got.value),
            Err(e) => failed(e),
        }
    }

    async fn write(&self, key: &[u8], value: &[u8]) -> Answer {
        match self.client.put(key, value).await {
            Ok(version) => Answer::ok(Some(version)),
            Err(e) => failed(e),
        }
    }

    async fn scan(&self, start: &[u8], count: u32) -> Answer {
        match self.client.scan(start, b"", count).await {
            Ok(_) => Answer::ok(None),
            Err(e) => failed(e),
        }
    }
}

/// The glommio executor the corekv driver runs on (through `corekv_engine::runtime`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Glommio;

impl Runtime for Glommio {
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> {
        corekv_engine::runtime::sleep(d)
    }

    fn spawn(&self, future: impl Future<Output = ()> + 'static) -> impl Future<Output = ()> {
        corekv_engine::runtime::spawn_local(future)
    }
}
