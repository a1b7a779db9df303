"""One module per `lm4lv` subcommand, each with `main(argv)`; nothing in the package imports them."""
