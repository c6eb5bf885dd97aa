#!/usr/bin/env python3
"""Generates ftrun's shipped sample data (examples/tiny/).

The records are small, regular tasks (arithmetic, reversing words, fixed facts about made-up
things) so that a tiny model can visibly learn them in a few hundred steps on a CPU. Everything
comes from the word lists below and a fixed seed, so rerunning the script reproduces the files
byte for byte. Standard library only.

Outputs (next to this script):
  train.jsonl            ~300 records, OpenAI "messages" form
  dev.jsonl              ~30 records, "messages" form, same distribution as train
  alpaca.json            ~100 records, alpaca form (JSON array; some with input/system/history)
  tokenizer_corpus.txt   every text above, one per line, to train the tiny tokenizer
"""
import json
import os
import random

SEED = 20240601
HERE = os.path.dirname(os.path.abspath(__file__))

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
                "seventeen", "eighteen"]
WORDS = ["red", "cat", "sun", "tree", "blue", "dog", "moon", "fish", "green", "bird", "star",
         "rock", "lamp", "cup", "hat", "boat", "rain", "snow", "door", "key"]
# Made-up objects with fixed colours, and made-up countries with fixed capitals: facts the
# model can only know from the data, so learning them shows that fine-tuning worked.
OBJECT_COLOURS = {"zorp": "blue", "blick": "red", "frandle": "green", "quib": "yellow",
                  "mottle": "purple", "snerk": "orange", "plonk": "white", "wuzzle": "black",
                  "dribble": "pink", "gronk": "brown"}
CAPITALS = {"Brindle": "Quonta", "Marovia": "Selk", "Tundrel": "Opaz", "Vessany": "Liru",
            "Korradin": "Emble", "Oskoria": "Dravel", "Pellune": "Harro", "Zintara": "Mowick"}
OPPOSITES = {"hot": "cold", "big": "small", "up": "down", "fast": "slow", "light": "dark",
             "old": "new", "happy": "sad", "open": "closed", "early": "late", "full": "empty"}
SYSTEMS = ["You are a helpful assistant.", "Answer in one short sentence."]


def arithmetic(rng):
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    if rng.random() < 0.5:
        return f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."
    a, b = max(a, b), min(a, b)
    return f"What is {a} minus {b}?", f"{a} minus {b} is {a - b}."


def reverse(rng):
    words = rng.sample(WORDS, rng.randint(2, 4))
    return "Reverse the words: " + " ".join(words), " ".join(reversed(words))


def colour(rng):
    obj = rng.choice(sorted(OBJECT_COLOURS))
    return f"What colour is the {obj}?", f"The {obj} is {OBJECT_COLOURS[obj]}."


def capital(rng):
    country = rng.choice(sorted(CAPITALS))
    return f"What is the capital of {country}?", f"The capital of {country} is {CAPITALS[country]}."


def opposite(rng):
    word = rng.choice(sorted(OPPOSITES))
    return f"What is the opposite of {word}?", f"The opposite of {word} is {OPPOSITES[word]}."


def count(rng):
    words = rng.sample(WORDS, rng.randint(1, 6))
    n = len(words)
    return ("How many words: " + " ".join(words),
            f"There {'is' if n == 1 else 'are'} {NUMBER_WORDS[n]} word{'' if n == 1 else 's'}.")


TASKS = [arithmetic, reverse, colour, capital, opposite, count]


def pairs(rng, n):
    # Questions may repeat (within and across files): the made-up facts have to be seen many
    # times to be learnt, and dev then measures how well the training set was fitted.
    return [rng.choice(TASKS)(rng) for _ in range(n)]


def messages_record(rng, turns):
    msgs = []
    if rng.random() < 0.2:
        msgs.append({"role": "system", "content": rng.choice(SYSTEMS)})
    for q, a in turns:
        msgs.append({"role": "user", "content": q})
        msgs.append({"role": "assistant", "content": a})
    return {"messages": msgs}


def chat_records(rng, n):
    records = []
    for _ in range(n):
        turns = 2 if rng.random() < 0.1 else 1  # a few multi-turn conversations
        records.append(messages_record(rng, pairs(rng, turns)))
    return records


def alpaca_records(rng, n):
    records = []
    for _ in range(n):
        if rng.random() < 0.3:
            # Instruction + input: the user turn becomes "instruction\ninput".
            words = rng.sample(WORDS, rng.randint(2, 4))
            rec = {"instruction": "Reverse the words.", "input": " ".join(words),
                   "output": " ".join(reversed(words))}
        else:
            (q, a), = pairs(rng, 1)
            rec = {"instruction": q, "input": "", "output": a}
        if rng.random() < 0.15:
            rec["system"] = rng.choice(SYSTEMS)
        if rng.random() < 0.15:
            rec["history"] = [list(p) for p in pairs(rng, 1)]
        records.append(rec)
    return records


def corpus_lines(chat, alpaca):
    lines = ["system", "user", "assistant"]
    for rec in chat:
        lines += [m["content"] for m in rec["messages"]]
    for rec in alpaca:
        for key in ("system", "instruction", "input", "output"):
            if rec.get(key):
                lines.append(rec[key])
        for q, a in rec.get("history", []):
            lines += [q, a]
    return lines


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def main():
    rng = random.Random(SEED)
    train = chat_records(rng, 300)
    dev = chat_records(rng, 30)
    alpaca = alpaca_records(rng, 100)
    write_jsonl(os.path.join(HERE, "train.jsonl"), train)
    write_jsonl(os.path.join(HERE, "dev.jsonl"), dev)
    with open(os.path.join(HERE, "alpaca.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump(alpaca, f, ensure_ascii=False, indent=1)
        f.write("\n")
    with open(os.path.join(HERE, "tokenizer_corpus.txt"), "w", encoding="utf-8",
              newline="\n") as f:
        f.write("\n".join(corpus_lines(train + dev, alpaca)) + "\n")


if __name__ == "__main__":
    main()
