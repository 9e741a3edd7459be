from library.models.tokenizers import PAD_OPENCLIP, VOCAB_SIZE, clip_tokenizer, clip_vocab_and_merges

CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]


def test_a_photo_of_a_cat():
    assert clip_tokenizer()("a photo of a cat").input_ids == CAT_IDS


def test_vocabulary_layout():
    vocab, merges = clip_vocab_and_merges()
    assert len(vocab) == VOCAB_SIZE and len(merges) == 48894
    assert vocab["!"] == 0 and vocab["!</w>"] == 256
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert merges[0] == ("i", "n") and vocab["in"] == 512


def test_padding_per_text_encoder():
    clip_l = clip_tokenizer()("a photo of a cat", padding="max_length", max_length=77).input_ids
    openclip = clip_tokenizer(PAD_OPENCLIP)("a photo of a cat", padding="max_length", max_length=77).input_ids
    assert len(clip_l) == len(openclip) == 77
    assert clip_l[:7] == openclip[:7] == CAT_IDS
    assert set(clip_l[7:]) == {49407} and set(openclip[7:]) == {0}


def test_truncates_to_77_and_each_call_is_a_fresh_object():
    tok = clip_tokenizer()
    ids = tok("cat " * 200, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
    assert len(ids) == 77 and ids[0] == 49406 and ids[-1] == 49407
    tok.add_tokens(["<my-concept>"])
    assert len(clip_tokenizer()) == VOCAB_SIZE
