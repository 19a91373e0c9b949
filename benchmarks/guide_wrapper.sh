#!/bin/bash
# The dashboard integration guide's wrapper, as the guide writes it, made to take its
# job from the command line so the benchmarks can put it beside `cronlog run`.
#
#   DASHBOARD_URL=http://127.0.0.1:PORT API_KEY=k guide_wrapper.sh COMMAND...
#
# A job starting with `curl` is run the guide's way (`-w "\n%{http_code}"`, judged by the
# status); any other command is judged by its exit code. Then one curl POSTs the JSON.

TASK_ID="sync-price-grid"
TASK_TITLE="Sync price grid"

START_TIME=$(date -u +"%Y-%m-%dT%H:%M:%SZ")
START_MS=$(date +%s%3N)

if [ "$1" = "curl" ]; then
  RESPONSE=$("$@" -w "\n%{http_code}" 2>&1)
  HTTP_CODE=$(echo "$RESPONSE" | tail -n1)
  RESPONSE_BODY=$(echo "$RESPONSE" | sed '$d')
else
  "$@"
  EXIT_CODE=$?
fi

END_TIME=$(date -u +"%Y-%m-%dT%H:%M:%SZ")
END_MS=$(date +%s%3N)
DURATION=$((END_MS - START_MS))

if [ "$1" = "curl" ] && [ "$HTTP_CODE" = "200" ]; then
  STATUS="success"
  NOTES=""
elif [ "$1" = "curl" ]; then
  STATUS="failed"
  NOTES="HTTP $HTTP_CODE: $RESPONSE_BODY"
elif [ "$EXIT_CODE" = "0" ]; then
  STATUS="success"
  NOTES=""
else
  STATUS="failed"
  NOTES="exit $EXIT_CODE"
fi

curl -sS -X POST "$DASHBOARD_URL/api/scheduled-tasks/ingest" \
  -H "X-API-Key: $API_KEY" \
  -H "Content-Type: application/json" \
  -d "{
    \"task_id\": \"$TASK_ID\",
    \"task_title\": \"$TASK_TITLE\",
    \"status\": \"$STATUS\",
    \"started_at\": \"$START_TIME\",
    \"ended_at\": \"$END_TIME\",
    \"duration_ms\": $DURATION,
    \"notes\": \"$NOTES\"
  }"
