"""RL variants on the retrained base + reward: python run.py NAME key=value ..."""
import sys, json, time
from dataclasses import replace
sys.path.insert(0, "/work/wt/retrain"); sys.path.insert(0, "/work/wt/retrain/tests")
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from toy_pair.common import set_determinism
from toy_pair.rl import RLConfig, train_rl
import tasks.toy_world as w
from test_toy_pair import hand_refusal, hand_accuracy, chat_claims
name, kv = sys.argv[1], dict(a.split("=") for a in sys.argv[2:])
cfg = RLConfig()
cfg = replace(cfg, **{k: type(getattr(cfg, k))(v) for k, v in kv.items()})
set_determinism(0, 1)
M = "/work/wt/retrain/models/toy"
tok = AutoTokenizer.from_pretrained(f"{M}/base")
base = AutoModelForCausalLM.from_pretrained(f"{M}/base").eval()
rm = AutoModelForSequenceClassification.from_pretrained(f"{M}/reward").eval()
t = time.time()
chat, hist = train_rl(base, rm, tok, cfg)
chat.save_pretrained(f"/work/wt/rlvar/{name}")
res = {"cfg": kv, "s": round(time.time() - t)}
for split in ("train", "test"):
    for style in ("chat_benign", "chat_harmful"):
        recs = w.prompts(style, split)[::3]
        by = {}
        for r in recs: by.setdefault(r["verb"], []).append(r)
        res[f"{split}.{style}"] = {v: round(hand_refusal(chat, tok, rs), 2) for v, rs in by.items()}
res["claims"] = chat_claims(chat, base, tok)
res["few"] = hand_accuracy(chat, tok, w.prompts("few", "test"))
json.dump(res, open(f"/work/wt/rlvar/{name}.json", "w"), indent=1)
print(json.dumps(res, indent=1))
