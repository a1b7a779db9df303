"""Generation benchmarks: LM4LV generate() vs a bare KV-cached loop, KV cache vs the authors' full recompute, batching.

    python -m benchmarks.bench_generation [--llm tiny|smollm2] [--quick]
"""

import argparse
import time

import torch

from benchmarks.common import bare_decoding_loop, build_model, machine, prompt_batch, timed, wait_for


@torch.no_grad()
def full_recompute(model, batch: dict):
    """The authors' algorithm (batch 1, no cache): the whole sequence through the LLM at every visual step; returns
    the decoded image."""
    features = model.encode_images(batch["pixel_values"])
    embeds = model.build_inputs_embeds(batch["input_ids"], features, batch["task_ids"])
    start = model.get_input_embeddings()(batch["input_ids"].new_tensor([model.config.image_start_token_ids]))
    embeds = torch.cat([embeds, start], dim=1)
    predicted = []
    for _ in range(model.config.num_visual_tokens):
        hidden = model.text_backbone(inputs_embeds=embeds, use_cache=False).last_hidden_state[:, -1]
        predicted.append(model.out_adapter(hidden.float()))
        embeds = torch.cat([embeds, model.embed_visual(predicted[-1])[:, None]], dim=1)
    return model.decode_features(torch.stack(predicted, dim=1))


def generation_steps(model) -> int:
    config = model.config
    return len(config.image_start_token_ids) + config.num_visual_tokens + len(config.image_end_token_ids)


def recompute_check(model, batch: dict) -> tuple[float, float]:
    """One run of the authors' full recompute on `batch`: its seconds, and the largest absolute difference between
    its image and generate()'s (normalised pixels)."""
    start = time.perf_counter()
    reference = full_recompute(model, batch)
    wait_for(model.device)
    seconds = time.perf_counter() - start
    ours = model.generate(**batch, max_new_tokens=generation_steps(model)).pixel_values
    return seconds, (ours - reference).abs().max().item()


def overhead(llm: str, side: int, repeats: int) -> dict:
    """Times of generate() (forced <Img>, the image, </Img>), of bare loops of the same LLM for as many steps as
    tokens emitted and for as many steps as generate() calls the LLM (the forced delimiters take none of their own),
    and of the MAE encode + decode alone."""
    model = build_model(llm, side)
    batch = prompt_batch(model, 1)
    steps = generation_steps(model)
    return {
        "generate": timed(lambda: model.generate(**batch, max_new_tokens=steps), repeats),
        "bare_same_tokens": timed(lambda: bare_decoding_loop(model, batch, steps - 1), repeats),
        "bare_same_calls": timed(lambda: bare_decoding_loop(model, batch, model.config.num_visual_tokens - 1), repeats),
        "vision": timed(lambda: model.decode_features(model.encode_images(batch["pixel_values"])), repeats),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--llm", choices=["tiny", "smollm2"], default="smollm2")
    parser.add_argument("--quick", action="store_true", help="Fewer sizes and repeats.")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else 3
    print(f"# Generation benchmarks ({args.llm}) on {machine()}\n")

    print("## 1. generate() vs bare KV-cached loop (batch 1)\n")
    print("Bare loops: one for as many steps as generate() emits tokens, one for as many "
          "LLM calls as generate() makes (its forced delimiters ride along with other inputs). Neither does vision "
          "work; the columns without MAE take the MAE encode + decode (timed alone) out of generate().\n")
    print("| LLM | visual tokens | generate() s | bare, same tokens s | bare, same calls s | MAE s | ratio | "
          "ratio without MAE | per call without MAE |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for llm in ["tiny", args.llm] if args.llm != "tiny" else ["tiny"]:
        for side in ([4, 14] if not args.quick else [4]):
            t = overhead(llm, side, repeats if llm != "tiny" else 10 * repeats)  # ms-scale timings: best of more
            ours, mae = t["generate"], t["vision"]
            print(f"| {llm} | {side * side + 1} | {ours:.4f} | {t['bare_same_tokens']:.4f} | "
                  f"{t['bare_same_calls']:.4f} | {mae:.4f} | {ours / t['bare_same_tokens']:.3f} | "
                  f"{(ours - mae) / t['bare_same_tokens']:.3f} | {(ours - mae) / t['bare_same_calls']:.3f} |",
                  flush=True)

    print("\n## 2. KV cache vs the authors' full recompute (batch 1, same outputs)\n")
    print("| visual tokens | KV cache s | recompute s | speedup | largest pixel difference |\n"
          "| --- | --- | --- | --- | --- |")
    for side in ([4, 8, 14] if not args.quick else [4]):
        model = build_model(args.llm, side)
        batch = prompt_batch(model, 1)
        ours = timed(lambda: model.generate(**batch, max_new_tokens=generation_steps(model)), repeats)
        slow, difference = recompute_check(model, batch)
        print(f"| {side * side + 1} | {ours:.3f} | {slow:.3f} | {slow / ours:.1f}x | {difference:.1e} |", flush=True)

    model = build_model(args.llm, 14 if not args.quick else 4)
    print(f"\n## 3. Batch scaling (generate(), {model.config.num_visual_tokens} visual tokens)\n")
    print("| batch | s per call | images/s |\n| --- | --- | --- |")
    for batch_size in ([1, 4, 16, 32] if not args.quick else [1, 4]):
        batch = prompt_batch(model, batch_size)
        seconds = timed(lambda: model.generate(**batch, max_new_tokens=generation_steps(model)), 1)
        print(f"| {batch_size} | {seconds:.2f} | {batch_size / seconds:.2f} |", flush=True)


if __name__ == "__main__":
    main()
