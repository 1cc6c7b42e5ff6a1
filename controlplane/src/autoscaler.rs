//! The autoscaler's recommendation as a pure function, after Kubernetes' HPA:
//! `ceil(current x metric / target)` per metric, the larger wins, 10 % tolerance, clamped to
//! [min, max], a cooldown between actions and a stabilization window for scale-down.
//! The async loop that feeds it metrics and applies its decisions lives in `controller/`.
