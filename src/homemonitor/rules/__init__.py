"""Rules: the care plan and its evaluation."""
