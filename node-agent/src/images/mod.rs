//! The kubelet's image duty: whether to pull (the pull policy against what is present),
//! the messages the kubelet shows for each outcome, the air-gap folder imported at start,
//! the sandbox ("pause") image the agent makes itself, registry mirrors, pull secrets'
//! credentials and image garbage collection.

pub mod airgap;
pub mod credentials;
pub mod gc;
pub mod mirrors;
pub mod pause;
pub mod registry;
pub mod reference;

use crate::runtime::PullPolicy;

/// What to do for a container's image, given whether the runtime already has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullDecision {
    UsePresent,
    Pull,
    /// `ErrImageNeverPull` with the kubelet's message.
    NeverPull(String),
}

pub fn decide(image: &str, policy: PullPolicy, present: bool) -> PullDecision {
    match (policy, present) {
        (PullPolicy::Always, _) | (PullPolicy::IfNotPresent, false) => PullDecision::Pull,
        (PullPolicy::IfNotPresent | PullPolicy::Never, true) => PullDecision::UsePresent,
        (PullPolicy::Never, false) => PullDecision::NeverPull(format!("Container image \"{image}\" is not present with pull policy of Never")),
    }
}

/// The waiting message of a container whose image pull is backing off (kubelet 1.32).
pub fn backoff_message(image: &str) -> String {
    format!("Back-off pulling image \"{image}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        assert_eq!(decide("a", PullPolicy::Always, true), PullDecision::Pull);
        assert_eq!(decide("a", PullPolicy::IfNotPresent, true), PullDecision::UsePresent);
        assert_eq!(decide("a", PullPolicy::IfNotPresent, false), PullDecision::Pull);
        assert_eq!(decide("a", PullPolicy::Never, true), PullDecision::UsePresent);
        assert_eq!(decide("a:1", PullPolicy::Never, false), PullDecision::NeverPull("Container image \"a:1\" is not present with pull policy of Never".into()));
        assert_eq!(PullPolicy::parse(None, "nginx"), PullPolicy::Always);
        assert_eq!(PullPolicy::parse(None, "nginx:1.22"), PullPolicy::IfNotPresent);
        assert_eq!(PullPolicy::parse(Some("Never"), "nginx"), PullPolicy::Never);
    }
}
