"""Helpers the test folders share (fixtures are in conftest.py): the test data folder, the
password and client of a served workbench's users, signing in on the page, reading stored
rows, stored comparisons and rated ones, the usual users, ranking the whole queue, waiting on a thread,
tiny models built for one purpose (a reward model, a perturbed policy, a parrot that always
gives one answer) with their registration, and the settings of one TRL training step on the
tiny model."""

from __future__ import annotations

import time
from pathlib import Path

from rlhf.auth import User
from rlhf.collect.annotation import Annotation, Submission
from rlhf.collect.workbench import Workbench
from storage import comparisons, feedback, models
from storage.comparisons import NewCompletion

DATA = Path(__file__).parent / "data"


# -- a served workbench's users ----------------------------------------------------------

def app_context(wb: Workbench, **parts):
    """The app's context on `wb` as `serve()` builds it (nothing started), with `parts`
    (an annotation service, a pre-generator with a fake sampler, ...) in place."""
    from dataclasses import replace

    from app.context import AppContext

    return replace(AppContext.create(wb), **parts)


def password(name: str) -> str:
    """The password every test user is created with."""
    return f"{name}-secret-pw"


# gradio_client's own login timeout is 5 s; on two busy cores the server checks passwords
# (scrypt, two at a time) slower than that when several tests sign in at once
CLIENT_TIMEOUT_S = 60


def connect(url: str, auth: tuple[str, str] | None = None):
    """A `gradio_client` Client of `url`, signed in with `auth` when given."""
    from gradio_client import Client

    return Client(url, auth=auth, verbose=False, httpx_kwargs={"timeout": CLIENT_TIMEOUT_S})


def client(served, name: str, secret: str | None = None):
    """A `gradio_client` session of `name` on a served workbench (its test password unless `secret`)."""
    return connect(served.url, (name, secret or password(name)))


def log_in(page, url: str, name: str, role: str) -> None:
    """Sign in on the page as `name` and wait for the line that names the user and role."""
    from playwright.sync_api import expect

    page.goto(url)
    page.get_by_label("username").fill(name)
    page.get_by_label("password").fill(password(name))
    page.get_by_role("button", name="Login").click()
    expect(page.locator("#user-line")).to_contain_text(f"Signed in as {name} ({role})")


# -- annotation -------------------------------------------------------------------------

ANA = User("ana", "annotator")
RESEARCHER = User("rita", "researcher")
BEN, CAT = User("ben", "annotator"), User("cat", "annotator")  # more annotators, for overlap and agreement


def rank_everything(annotation: Annotation, user: User, ranking: str = "A > B > C > D") -> list[int]:
    """Let `user` take and rank items until the queue has nothing for them; the ids, in order."""
    seen = []
    while (item := annotation.next_item(user)) is not None:
        seen.append(item.comparison_id)
        assert annotation.submit(user, Submission(item.handout, ranking))["status"] == "stored"
    return seen


def wait_for(condition, timeout: float = 120.0):
    """The first true value of `condition()`, polled every 50 ms (a background thread's state)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


# -- the store ----------------------------------------------------------------------------

def rows(wb: Workbench, sql: str, params=None) -> list[tuple]:
    """The rows of one query on an open workbench's store."""
    return wb.store.cursor().execute(sql, params or []).fetchall()


def add_comparisons(wb: Workbench, how_many: int, k: int = 4, prompt_set: str | None = None) -> list[int]:
    """Comparisons of K completions 'answer A', 'answer B', ... from the base version for the
    first prompts (of a set), stored directly: the queue needs no sampling."""
    prompt_ids = [r[0] for r in rows(wb, "SELECT id FROM prompts WHERE ? IS NULL OR prompt_set = ? ORDER BY id LIMIT ?",
                                     [prompt_set, prompt_set, how_many])]
    with wb.store.transaction() as cur:
        return [comparisons.add(cur, pid, [NewCompletion(f"answer {chr(65 + i)}", "base") for i in range(k)])
                for pid in prompt_ids]


def register(wb: Workbench, name: str, kind: str, parent: str | None = None, path: str | None = None,
             data_snapshot: str | None = None) -> None:
    """Register a version whose files a test put under models/<name> (or `path`)."""
    with wb.store.transaction() as cur:
        models.register(cur, name, kind, base_model="tiny-llama", path=path or f"models/{name}", method="test",
                        parent=parent, data_snapshot=data_snapshot)


# -- ratings (a reward model per rated dimension) ---------------------------------------

def rate(wb: Workbench, comparison_id: int, user: str, ranking: str, scores: dict[str, dict[str, int]]) -> None:
    """`user` ranks the comparison and rates its completions ({letter: {dimension: 1-5}})."""
    wb.rank(comparison_id, ranking, user)
    cur = wb.store.cursor()
    ranking_id = cur.execute("SELECT id FROM rankings WHERE comparison_id = ? AND annotator = ?",
                             [comparison_id, user]).fetchall()[0][0]
    with wb.store.transaction() as tx:
        feedback.add_ratings(tx, ranking_id, comparison_id, scores)


def rated_comparisons(wb: Workbench, how_many: int = 4) -> list[int]:
    """Comparisons of three completions, ranked A > B > C and rated on helpfulness the other way round."""
    prompt_ids = [r[0] for r in wb.store.cursor().execute("SELECT id FROM prompts ORDER BY id LIMIT ?",
                                                          [how_many]).fetchall()]
    with wb.store.transaction() as cur:
        ids = [comparisons.add(cur, pid, [NewCompletion(f"Answer {c} to {pid}.", "base") for c in "ABC"])
               for pid in prompt_ids]
    for comparison_id in ids:
        rate(wb, comparison_id, "ana", "A > B > C", {"A": {"helpfulness": 1}, "B": {"helpfulness": 3},
                                                     "C": {"helpfulness": 5, "honesty": 4}})
    return ids


TEXT_SCORES = {"answer A": 0.5, "answer B": 2.0, "answer C": 0.5, "answer D": -1.0}


def text_scores(prompts_, texts, categories_=None) -> list[float]:
    """A stand-in reward model that scores the texts `add_comparisons` stores by TEXT_SCORES."""
    return [TEXT_SCORES[text] for text in texts]


# -- tiny models ----------------------------------------------------------------------------

def save_reward_model(directory: Path, tokenizer_source: Path, seed: int = 1, visible_scores: bool = False) -> Path:
    """A randomly initialised scalar-head Llama with the tiny policy's config and tokenizer;
    with `visible_scores`, its score head drawn from N(0, 1) so that texts score visibly apart."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    config = LlamaConfig.from_pretrained(tokenizer_source)
    config.num_labels, config.pad_token_id = 1, tokenizer.pad_token_id
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(config)
    if visible_scores:
        with torch.no_grad():
            model.score.weight.normal_(0.0, 1.0)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def save_perturbed_policy(directory: Path, source: Path, scale: float = 0.5, seed: int = 2) -> Path:
    """The policy at `source` with noise added to every weight: another model, same tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(source).save_pretrained(directory)
    return directory


def save_parrot(directory: Path, tokenizer_source: Path, text: str) -> Path:
    """A two-layer Llama that answers every prompt with `text` and an EOS, whatever the
    temperature: its attention and MLP write nothing (the residual stream is the current
    token's embedding), each token of `text` has its own basis vector as embedding, and
    the untied output layer maps each one strongly to the next token (the prompt's last
    token, the generation prompt's newline, to the first). The tokens of `text` must be
    distinct."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    chain = tokenizer.encode(text, add_special_tokens=False)
    opener = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=True,
                                           add_generation_prompt=True, return_dict=True)["input_ids"][-1]
    inputs, outputs = [opener, *chain], [*chain, tokenizer.eos_token_id]
    assert len(set(inputs)) == len(inputs), f"the tokens of {text!r} repeat: the parrot needs distinct ones"
    hidden = 64
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for slot, (token, following) in enumerate(zip(inputs, outputs)):
            model.model.embed_tokens.weight[token] = 0.0
            model.model.embed_tokens.weight[token, slot] = 1.0
            model.lm_head.weight[following, slot] = 100.0  # after the final RMSNorm the slot holds sqrt(64)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# -- one TRL step on the tiny model, for tests that an exported file trains as it is ------------

def one_step_config(config_class, output_dir, **extra):
    """A TRL config (DPOConfig, KTOConfig, ...) for one CPU step of batch 2, nothing saved or reported."""
    return config_class(
        output_dir=str(output_dir), max_steps=1, per_device_train_batch_size=2, gradient_accumulation_steps=1,
        learning_rate=1e-4, logging_steps=1, report_to="none", save_strategy="no", bf16=False, fp16=False,
        use_cpu=True, max_length=128, dataloader_num_workers=0, disable_tqdm=True, gradient_checkpointing=False,
        **extra,
    )


def small_lora():
    """A rank-4 LoRA on the attention's q and v projections."""
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
