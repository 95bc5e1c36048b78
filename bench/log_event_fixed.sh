#!/usr/bin/env bash
# 002's log_event.sh with its bugs fixed, so that each call really appends one JSON line:
#   - $timestamp is passed to jq with --arg (002's filter uses it without defining it: jq fails);
#   - jq -c prints the object on one line (002's pretty-printed, multi-line output is not JSONL);
#   - the event is handed to the locked shell as an argument, not spliced into its command line (002's
#     "echo \"$event\"" lets the inner shell strip the event's own double quotes).
# Same processes per call as 002's: bash, date, jq, flock, bash.
# Usage: log_event_fixed.sh <logfile> <interaction> <actor> <type> <content>
LOGFILE="$1"; shift
timestamp=$(date -u +"%Y-%m-%dT%H:%M:%SZ")
event=$(jq -nc \
  --arg i "$1" \
  --arg actor "$2" \
  --arg type "$3" \
  --arg content "$4" \
  --arg timestamp "$timestamp" \
  '{interaction: ($i|tonumber), actor: $actor, type: $type, content: $content, timestamp: $timestamp}')
# Append under lock
flock --exclusive "$LOGFILE" bash -c 'printf "%s\n" "$1" >> "$2"' _ "$event" "$LOGFILE"
