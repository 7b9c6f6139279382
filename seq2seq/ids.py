"""The special token ids, fixed so that a model, its checkpoint, the data and the search agree without a lookup.

====  =====  =========================================================
id    piece  use
====  =====  =========================================================
0     <pad>  fills batches to a rectangle; never a target
1     <unk>  unknown piece (rare: byte fallback spells unseen characters)
2     <s>    BOS, the first decoder input
3     </s>   EOS, the last decoder target; decoding stops there
====  =====  =========================================================

The tokenizer trains its SentencePiece models with these ids and refuses a model with others.
"""

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3
SPECIAL_IDS = frozenset((PAD_ID, UNK_ID, BOS_ID, EOS_ID))
