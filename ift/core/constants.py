"""Values every layer of the package agrees on."""

#: Label of a token that is not supervised (prompt tokens, padding); PyTorch's cross-entropy default.
IGNORE_INDEX = -100

#: Prefix of the frozen reference policy's weights in a FineTuneModule's state dict.
REFERENCE_PREFIX = "reference_policy."
