//! End-to-end tests of PSS live in `tests/`: a real controller, real `pss-agent` processes on
//! real Podman, `pssctl` through its own `execute`, and `pss-proxy` carrying traffic.
