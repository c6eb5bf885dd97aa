#!/usr/bin/env bash
# `ftrun generate` and `ftrun chat` on the outputs of LoRA, P-Tuning v2 and full SFT runs
# (configs/tiny/*.yaml, 3 steps each): generate gives text; chat driven through stdin keeps
# the history (turn 2's prompt holds turn 1; after `clear` the same question has a short
# prompt again), its greedy first reply equals `ftrun generate`'s, `exit` and end of input
# both quit cleanly; a history longer than the context loses its oldest exchanges.
set -euo pipefail
FTRUN=$1
T=$(mktemp -d /tmp/ftrun_e2e_chat.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
Q1="What is 2 plus 3?"
Q2="What is the capital of Pellune?"
passed=0
for strategy in lora ptuning_v2 sft; do
  out="$T/$strategy"
  "$FTRUN" configs/tiny/$strategy.yaml --set training_args.output_dir="$out" --set training_args.max_steps=3 \
    --set training_args.save_strategy=no > "$T/train.log" 2>&1 || { cat "$T/train.log"; fail "$strategy training"; }
  gen=$("$FTRUN" generate "$out" --prompt "$Q1" --max-new-tokens 16 2> "$T/gen.log") \
    || { cat "$T/gen.log"; fail "$strategy: generate"; }
  [ -n "$gen" ] || fail "$strategy: generate gave no text"
  # Two turns, then the second question again after `clear`.
  printf '%s\n%s\nclear\n%s\n' "$Q1" "$Q2" "$Q2" \
    | "$FTRUN" chat "$out" --show-prompt --max-new-tokens 16 > "$T/chat.out" 2> "$T/chat.err" \
    || { cat "$T/chat.err"; fail "$strategy: chat"; }
  mapfile -t replies < "$T/chat.out"
  [ "${#replies[@]}" = 3 ] || { cat "$T/chat.out"; fail "$strategy: expected 3 reply lines, got ${#replies[@]}"; }
  # (chat strips the reply's surrounding whitespace; generate prints it as decoded)
  trimmed=$(printf '%s' "$gen" | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//')
  [ "${replies[0]}" == "$trimmed" ] || fail "$strategy: chat's first reply '${replies[0]}' differs from generate's '$gen'"
  mapfile -t lens < <(sed -n 's/^ftrun: turn [0-9]* prompt \([0-9]*\) tokens$/\1/p' "$T/chat.err")
  [ "${#lens[@]}" = 3 ] || { cat "$T/chat.err"; fail "$strategy: expected 3 prompt lengths"; }
  grep -q "history cleared" "$T/chat.err" || fail "$strategy: clear was not acknowledged"
  # Turn 2 = turn 1's prompt + reply + the new question; after clear the question stands alone.
  [ "${lens[1]}" -gt "$((lens[0] + lens[2] / 2))" ] \
    || fail "$strategy: turn 2's prompt (${lens[1]} tokens) does not hold turn 1 (${lens[0]})"
  [ "${lens[2]}" -lt "${lens[1]}" ] || fail "$strategy: clear kept the history (${lens[2]} vs ${lens[1]} tokens)"
  echo "$strategy: generate '$gen'; chat prompts ${lens[*]} tokens"
  passed=$((passed+1))
done
# `exit` stops reading (the line after it is never answered); sampling options work in chat.
printf '%s\nexit\n%s\n' "$Q1" "$Q2" | "$FTRUN" chat "$T/lora" --max-new-tokens 8 --temperature 0.8 --top-p 0.9 --seed 3 \
  > "$T/exit.out" 2> "$T/exit.err" || { cat "$T/exit.err"; fail "chat with exit"; }
[ "$(wc -l < "$T/exit.out")" = 1 ] || { cat "$T/exit.out"; fail "chat answered after exit"; }
# Context management: with room for 470 new tokens of the tiny model's 512 positions, the
# prompt may hold 42 tokens; the second turn no longer fits with the first, which is dropped,
# and an over-long message keeps only its end. No room at all is an error.
long=$(printf 'the zorp is blue and %.0s' $(seq 1 30))
printf '%s\n%s\n%s\n' "$Q1" "$Q2" "$long what colour is it?" \
  | "$FTRUN" chat "$T/lora" --show-prompt --max-new-tokens 470 > "$T/ctx.out" 2> "$T/ctx.err" \
  || { cat "$T/ctx.err"; fail "chat near the context limit"; }
[ "$(wc -l < "$T/ctx.out")" = 3 ] || { cat "$T/ctx.out" "$T/ctx.err"; fail "expected 3 replies near the context limit"; }
mapfile -t lens < <(sed -n 's/^ftrun: turn [0-9]* prompt \([0-9]*\) tokens$/\1/p' "$T/ctx.err")
[ "${#lens[@]}" = 3 ] || { cat "$T/ctx.err"; fail "expected 3 prompt lengths near the context limit"; }
for n in "${lens[@]}"; do [ "$n" -le 42 ] || { cat "$T/ctx.err"; fail "a prompt of $n tokens exceeds 512 - 470"; }; done
grep -q "dropped the 2 oldest message(s) to fit the model's context of 512 tokens" "$T/ctx.err" \
  || { cat "$T/ctx.err"; fail "dropping the oldest exchange was not reported"; }
grep -q "only its end was kept" "$T/ctx.err" || { cat "$T/ctx.err"; fail "cutting a long message was not reported"; }
[ "${lens[2]}" = 42 ] || fail "the cut prompt has ${lens[2]} tokens, not the 42 allowed"
if echo hi | "$FTRUN" chat "$T/lora" --max-new-tokens 512 > /dev/null 2> "$T/room.err"; then fail "no room for a prompt accepted"; fi
grep -q "leaves no room for a prompt in the model's context of 512 tokens" "$T/room.err" \
  || { cat "$T/room.err"; fail "unclear error when --max-new-tokens fills the context"; }
# A wrong path is a clear error.
if "$FTRUN" chat "$T/none" < /dev/null > "$T/bad.log" 2>&1; then fail "chat on a missing model succeeded"; fi
grep -q "neither a model directory" "$T/bad.log" || { cat "$T/bad.log"; fail "unclear error for a missing model"; }
echo "e2e chat: $passed passed"
