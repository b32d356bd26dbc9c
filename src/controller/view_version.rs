//! ViewVersion reconciler (filled in by the processors and rollout work).

use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::{
    Client,
    runtime::{Controller, controller::Action, watcher},
};

use super::{Context, Settings, watched_api};
use crate::{Result, api::ViewVersion};

pub fn controller(client: &Client, settings: &Settings) -> Controller<ViewVersion> {
    super::controller_for(client, settings)
}

pub fn run(
    ctrl: Controller<ViewVersion>,
    _client: &Client,
    ctx: &Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Stream<Item = ()> {
    ctrl.graceful_shutdown_on(shutdown).run(reconcile, super::error_policy::<ViewVersion>("ViewVersion"), ctx.clone()).map(|_| ())
}

async fn reconcile(_obj: Arc<ViewVersion>, _ctx: Arc<Context>) -> Result<Action> {
    Ok(Action::await_change())
}

pub async fn poll_lag(_ctx: Arc<Context>, shutdown: impl Future<Output = ()>) {
    shutdown.await
}
