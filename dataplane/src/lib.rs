//! pss-proxy: the PSS L4 data plane.
