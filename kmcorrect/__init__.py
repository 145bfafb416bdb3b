"""The `kmcorrect` command: one console script over the pipeline's stages (kmcorrect.cli)."""
