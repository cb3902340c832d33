//! `runlet jobs create|update` flags that bind a job to a Pub/Sub pull subscription (the
//! daemon runs one task per message; `crate::pubsub`).

use clap::Args;

#[derive(Debug, Args, Default, Clone)]
pub struct PubsubArgs {
    /// Run this job when messages arrive on a Pub/Sub pull subscription
    /// (projects/P/subscriptions/S): one task per message, none while it is empty. The
    /// daemon pulls through PUBSUB_EMULATOR_HOST.
    #[arg(long, conflicts_with = "clear_pubsub_subscription")]
    pub pubsub_subscription: Option<String>,
    /// Executions started by the subscription's messages running at once, at most, 1-100
    /// [default: 1].
    #[arg(long, allow_hyphen_values = true)]
    pub max_executions: Option<String>,
    /// Unbind the job from its Pub/Sub subscription (update).
    #[arg(long)]
    pub clear_pubsub_subscription: bool,
}
