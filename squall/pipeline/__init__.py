"""The content pipeline's units, with no knowledge of the processor around them:
keyword filter, rich text, mentions, link previews, e-mail. docs/pipeline.md
explains each; ``squall.processor.stages`` turns them into stages."""
