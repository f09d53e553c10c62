"""The deployed model (sessions in, top-K out), its export to on-device runtimes, latency."""
