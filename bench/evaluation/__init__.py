"""Full-ranking metrics, the exact top-K, and per-case evaluation (repeat / new, hot / cold)."""
