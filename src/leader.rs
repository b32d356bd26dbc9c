//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager):
//! only the holder reconciles; a replica that loses the Lease stops.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::{sync::watch, task::JoinHandle};
use tracing::{error, info};

/// Lease duration (seconds): a dead leader is replaced within about this
/// long; the holder renews `GRACE` seconds before it expires.
const DURATION: u64 = 15;
const GRACE: u64 = 5;

pub struct Leadership {
    leading: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

impl Leadership {
    /// Waits until this replica holds the Lease; None if asked to stop first.
    pub async fn acquire(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        mut stop: watch::Receiver<bool>,
    ) -> Result<Option<Leadership>, LeaseManagerError> {
        let manager = LeaseManagerBuilder::new(client, name)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_duration(DURATION)
            .with_grace(GRACE)
            .build()
            .await?;
        let (mut leading, task) = manager.watch().await;
        info!(lease = %format!("{namespace}/{name}"), identity, "waiting to lead");
        tokio::select! {
            r = leading.wait_for(|l| *l) => {
                if r.is_err() {
                    return Ok(None);
                }
            }
            _ = stop.wait_for(|s| *s) => return Ok(None),
        }
        info!(identity, "leading");
        Ok(Some(Leadership { leading, task }))
    }

    /// Stops the operator if the Lease is lost; the flag says it was.
    pub fn on_loss(&self, stop: watch::Sender<bool>) -> Arc<AtomicBool> {
        let lost = Arc::new(AtomicBool::new(false));
        let (flag, mut leading, mut stopping) = (lost.clone(), self.leading.clone(), stop.subscribe());
        tokio::spawn(async move {
            tokio::select! {
                r = leading.wait_for(|l| !*l) => if r.is_ok() {
                    error!("lost the leader-election Lease: stopping the controllers");
                    flag.store(true, Ordering::SeqCst);
                    let _ = stop.send(true);
                },
                // Stopping anyway: let go of the receiver so the Lease can be released.
                _ = stopping.wait_for(|s| *s) => {}
            }
        });
        lost
    }

    /// Gives the Lease up, so that a standby takes over at once.
    pub async fn release(self) {
        drop(self.leading);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.task).await;
    }
}
