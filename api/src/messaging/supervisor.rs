//! Supervision of the API's background tasks (relay, ingesters, lease monitor, job reconciler,
//! live feed): a task that panics is logged, counted and started again after a pause, rather than
//! ending silently while `/healthz` still says ok.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What `/healthz` shows of each background task.
#[derive(Clone, Debug, Default, serde::Serialize, utoipa::ToSchema)]
pub struct TaskHealth {
    /// False while the task waits to be started again after a panic.
    pub running: bool,
    /// Panics since the API started.
    pub restarts: u64,
    /// The last panic's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_panic: Option<String>,
}

/// The background tasks by name.
#[derive(Clone, Default)]
pub struct Tasks(Arc<Mutex<BTreeMap<&'static str, TaskHealth>>>);

impl Tasks {
    pub fn snapshot(&self) -> BTreeMap<&'static str, TaskHealth> {
        self.0.lock().expect("not poisoned").clone()
    }

    fn update(&self, name: &'static str, change: impl FnOnce(&mut TaskHealth)) {
        change(
            self.0
                .lock()
                .expect("not poisoned")
                .entry(name)
                .or_default(),
        );
    }

    /// Runs `make()` until it returns (on shutdown), starting it again whenever it panics.
    pub fn spawn<F, Fut>(
        &self,
        name: &'static str,
        shutdown: CancellationToken,
        make: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let tasks = self.clone();
        tokio::spawn(async move {
            loop {
                tasks.update(name, |t| t.running = true);
                let Err(e) = tokio::spawn(make()).await else {
                    return;
                };
                let Ok(payload) = e.try_into_panic() else {
                    return; // aborted
                };
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into());
                tracing::error!(
                    task = name,
                    "background task panicked: {message}; restarting"
                );
                tasks.update(name, |t| {
                    t.running = false;
                    t.restarts += 1;
                    t.last_panic = Some(message);
                });
                if super::pause(&shutdown, Duration::from_secs(1)).await {
                    return;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_panicking_task_is_started_again_and_counted() {
        let tasks = Tasks::default();
        let runs = Arc::new(AtomicU32::new(0));
        let counter = runs.clone();
        let handle = tasks.spawn("flaky", CancellationToken::new(), move || {
            let counter = counter.clone();
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("first run fails");
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        let health = &tasks.snapshot()["flaky"];
        assert_eq!(health.restarts, 1);
        assert_eq!(health.last_panic.as_deref(), Some("first run fails"));
    }
}
