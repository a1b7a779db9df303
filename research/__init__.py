"""The lab: the offline default (SmolLM2 and the small MAE, prepared once and cached), its profiles and recipe, the
demo (`lm4lv demo`), the paper's comparisons and the lever study (`lm4lv ablate`), and their reports and charts.
Nothing in the library (modeling, processing, pipelines, trainers, metrics) imports it."""
