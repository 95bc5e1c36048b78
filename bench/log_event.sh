#!/usr/bin/env bash
# 002's log_event.sh (source document 002, section 2), exactly as written there except for one line: the log
# path is the first argument instead of "$(pwd)/events.log", so the benchmark can point it at a temp file.
# Usage: log_event.sh <logfile> <interaction> <actor> <type> <content>
#
# As written in 002 this script does not produce a JSON line: the jq filter uses $timestamp, which is never
# passed with --arg, so jq fails ("$timestamp is not defined") and an empty line is appended (exit status 0).
# It is kept verbatim on purpose; log_event_fixed.sh is the same script with the bugs fixed.
LOGFILE="$1"; shift
timestamp=$(date -u +"%Y-%m-%dT%H:%M:%SZ")
event=$(jq -n \
  --arg i "$1" \
  --arg actor "$2" \
  --arg type "$3" \
  --arg content "$4" \
  '{interaction: ($i|tonumber), actor: $actor, type: $type, content: $content, timestamp: $timestamp}')
# Append under lock
flock --exclusive "$LOGFILE" bash -c "echo \"$event\" >> '$LOGFILE'"
