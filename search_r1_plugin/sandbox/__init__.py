"""The offline sandbox: everything a run needs without a model hub, a GPU or a dataset download.

* :mod:`.world` — a fictional sample world (corpus + NQ/HotpotQA-style questions that need retrieval);
* :mod:`.reader` — a scripted multi-hop reader policy over that world's phrasing;
* :mod:`.tiny_model` — a tiny random Qwen2 with a tokenizer trained on the spot, and a warm start
  on protocol demonstrations;
* :mod:`.stack` — the offline environment, and a world's corpus indexed and served (the one way the
  demos, the dry run and the GPU check assemble it);
* :mod:`.server_process` — the retrieval server as a real process;
* :mod:`.verl_harness` — verl's own ``AgentLoopWorker``/``RewardLoopWorker`` without Ray or GPUs;
* :mod:`.trainer_run` — verl's ``main_ppo`` on CPU as a subprocess, with its metrics.

The demo, the dry run, the benchmarks and the tests import it; so can users' own tests.
"""
