"""Values every layer of the package agrees on."""

#: Label of a token that is not supervised (prompt tokens, padding); PyTorch's cross-entropy default.
IGNORE_INDEX = -100

#: What an objective trains on (its ``trains_on``); the data checks hold the data to it.
TRAINS_ON_RESPONSES = "prompts with responses"
TRAINS_ON_PAIRS = "preference pairs"
TRAINS_ON_PROMPTS = "prompts alone"

#: Prefix of the frozen reference policy's weights in a FineTuneModule's state dict.
REFERENCE_PREFIX = "reference_policy."

#: Added to the logits of tokens outside the alphabet. Finite (unlike -inf), so that
#: ``p log p`` (entropies) stays 0 rather than nan, and large enough that ``exp`` of it is 0.
MASK_VALUE = -1e4
