"""Train LM4LV (adapters + task tokens; the LLM and the vision module stay frozen) with `transformers.Trainer`.

A script to copy and edit; it uses only the installed `lm4lv` package and is what `lm4lv train` runs:

    python examples/run_restoration.py --llm PATH_OR_ID --vision PATH_OR_ID --task denoise --output_dir out
    python examples/run_restoration.py config.yaml            # the same arguments from a JSON/YAML file
    accelerate launch --config_file examples/accelerate/cpu_2proc.yaml examples/run_restoration.py --use_cpu ...

Every option of `ModelArguments`, `DataArguments` and `LM4LVTrainingArguments` is a flag (`--help` lists them).
"""

from lm4lv.trainers.training import parse_arguments, train


def main():
    model_args, data_args, training_args = parse_arguments()
    trainer = train(model_args, data_args, training_args)
    if trainer.is_world_process_zero():
        print(f"saved the trained adapters and task tokens to {training_args.output_dir}")


if __name__ == "__main__":
    main()
