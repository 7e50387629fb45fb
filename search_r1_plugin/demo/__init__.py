"""The embedded-sample demos behind ``search-r1 demo``: CPU training with verl's ``main_ppo``
(:mod:`.cpu_training`, the README's main command) and a scripted rollout without training (:mod:`.scripted_rollout`)."""
