"""Learning broken on purpose, for showing that the learning check goes red: every trajectory's reward is 0
(so every advantage is 0), while the EM the check reads is still computed.

    search-r1 demo --learn --arms grpo --model tests/assets/learning_warm_start --steps 20 --val-every 20 \
        reward.custom_reward_function.path=$PWD/tests/assets/zero_reward.py  # absolute: Ray workers start elsewhere
"""

from search_r1_plugin.reward import compute_score as exact_match


def compute_score(*args, **kwargs):
    return {**exact_match(*args, **kwargs), "score": 0.0}
