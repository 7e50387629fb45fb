from search_r1_plugin.protocol import (
    INVALID_ACTION_MESSAGE,
    extract_answer,
    format_docs,
    format_observation,
    make_prompt,
    observation_open,
    parse_action,
)


def test_prompt_matches_original_text():
    p = make_prompt("  who wrote hamlet ")
    assert p.startswith("Answer the given question. You must conduct reasoning inside <think> and </think> first")
    assert "You can search as many times as your want." in p  # the original's typo is part of the prompt
    assert p.endswith("For example, <answer> Beijing </answer>. Question: who wrote hamlet?\n")
    assert make_prompt("who?").endswith("Question: who?\n")


def test_parse_first_action_only():
    a = parse_action("<think>x</think><search> q1 </search><answer>a</answer>")
    assert (a.kind, a.content) == ("search", "q1")
    assert parse_action("<answer> Paris </answer><search>q</search>").kind == "answer"


def test_parse_invalid_cases():
    for text in ["no tags", "<search>unclosed", "<search>a</answer>", "<think>only</think>", "", "<Search>x</Search>"]:
        assert parse_action(text).kind is None, text


def test_parse_multiline_and_empty_and_unicode():
    assert parse_action("<search>\n line one\n line two \n</search>").content == "line one\n line two"
    a = parse_action("<search></search>")
    assert (a.kind, a.content) == ("search", "")
    assert parse_action("<answer> Zürich 東京 </answer>").content == "Zürich 東京"


def test_nested_tags_take_first_closing():
    a = parse_action("<search>outer <search>inner</search> tail</search>")
    assert (a.kind, a.content) == ("search", "outer <search>inner")


def test_extract_answer_is_last():
    assert extract_answer("<answer>a</answer> then <answer> b </answer>") == "b"
    assert extract_answer("no answer") is None


def test_docs_formatting_like_original():
    docs = [
        {"document": {"id": "1", "contents": '"Paris"\nParis is the capital.\nSecond line.'}, "score": 0.9},
        {"id": "2", "contents": '"Lyon"\nLyon is a city.'},
    ]
    assert format_docs(docs) == ('Doc 1(Title: "Paris") Paris is the capital.\nSecond line.\nDoc 2(Title: "Lyon") Lyon is a city.\n')
    obs = format_observation(docs)
    assert obs.startswith('\n\n<information>Doc 1(Title: "Paris")')
    assert obs.endswith("Lyon is a city.</information>\n\n")  # the original strips the listing


def test_observation_opening_after_the_token_that_completed_search():
    # what the stop token carried after </search> → how the observation opens (the original's text: \n\n<information>)
    full = "\n\n<information>"
    cases = {"": full, "\n\n": "<information>", "\n": "\n<information>", "\n\n\n": "<information>", "<": full, " ": full}
    for tail, opening in cases.items():
        assert observation_open(f"<search> q </search>{tail}") == opening, repr(tail)
    assert observation_open("no tag\n\n") == "\n\n<information>"
    assert format_observation([{"contents": '"T"\nx'}], "<search> q </search>\n\n") == '<information>Doc 1(Title: "T") x</information>\n\n'


def test_invalid_message_text():
    assert INVALID_ACTION_MESSAGE == (
        "\nMy previous action is invalid. If I want to search, I should put the query between <search> and "
        "</search>. If I want to give the final answer, I should put the answer between <answer> and </answer>. "
        "Let me try again.\n"
    )
