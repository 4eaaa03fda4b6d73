#!/usr/bin/env bash
# Set everything up and start clawpen: the orchestrator, plus a chat with your agent.
#
#   bash scripts/quickstart.sh
#
# Asks once for your Anthropic API key (or takes ANTHROPIC_API_KEY) and keeps it in clawpen's
# vault (`clawpen secrets`), never in the config file. ANTHROPIC_BASE_URL, if set, is the model
# endpoint. Without a key it starts the offline demo model, which echoes and runs `run: COMMAND`
# in the agent's container.
# TELEGRAM_BOT_TOKEN (and TELEGRAM_CHAT_ID to pair your chat) adds the Telegram channel, also
# to an existing config on a second run (SLACK_BOT_TOKEN + SLACK_APP_TOKEN and DISCORD_BOT_TOKEN
# likewise): `clawpen init` writes the config, and the tokens go to the vault.
# With a terminal, you get a chat prompt; the orchestrator runs in a session of its own (a
# Ctrl-C in the chat stops an answer, never the orchestrator) and is stopped cleanly when you
# leave the chat (keep it running: docs/service.md). Without one, it runs in the foreground.
# `clawpen` is linked into /usr/local/bin (scripts/link-clawpen.sh) when that is writable.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
bash scripts/link-clawpen.sh

echo "quickstart: building the agent image (the first build takes about a minute)"
clawpen image build

umask 077  # what this writes (config, logs, the data directory) is its owner's only
config=${CLAWPEN_CONFIG:-clawpen.yaml}
pids=()
orchestrator=""
stop() {
  if [[ -n $orchestrator ]] && kill -0 "$orchestrator" 2>/dev/null; then
    echo "quickstart: stopping the orchestrator (start it again: clawpen run --config $config)"
  fi
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop EXIT

# The key: from ANTHROPIC_API_KEY, else the vault, else asked for once (hidden), else the demo.
# The demo's key is kept in the vault too: a second start does not ask again.
stored=""
[[ -f $config ]] && stored=$(clawpen secrets get anthropic-api-key --reveal --config "$config" 2>/dev/null || true)
key=""
if [[ -n ${ANTHROPIC_API_KEY:-} ]]; then
  [[ $stored == "$ANTHROPIC_API_KEY" ]] || key=$ANTHROPIC_API_KEY
  stored=$ANTHROPIC_API_KEY
elif [[ -z $stored && -t 0 ]]; then
  read -rsp "quickstart: your Anthropic API key (Enter for the offline demo): " typed; echo
  if [[ -n $typed ]]; then key=$typed; stored=$typed; fi
fi
demo=()
if [[ -z $stored || $stored == demo-key ]]; then
  [[ $stored == demo-key ]] || key=demo-key
  demo=(--demo)
fi

# The config: written, or updated with what the environment now offers (clawpen init); the
# channel tokens go to the vault, the config names them (secret:NAME).
clawpen init "${demo[@]}" --config "$config"
[[ -z $key ]] || printf '%s' "$key" | clawpen secrets set anthropic-api-key --config "$config" 2>/dev/null
unset stored typed key
if [[ ${#demo[@]} -gt 0 ]]; then
  echo "quickstart: no Anthropic API key: using the offline demo model on :8765"
  echo "            (try: run: uname -a). For a real Claude:"
  echo "            clawpen secrets set anthropic-api-key --config $config, then run this again."
  setsid clawpen demo-model --port 8765 --api-key demo-key >/dev/null 2>&1 &
  pids+=($!)
fi
clawpen check --config "$config"

if [[ ! -t 0 ]]; then
  clawpen run --config "$config"
  exit
fi
errors=$(mktemp)  # what it says before its log file is open (a config it cannot use)
setsid clawpen run --config "$config" >/dev/null 2>"$errors" &
orchestrator=$!
pids+=($orchestrator)
for _ in $(seq 100); do
  clawpen status --json --config "$config" >/dev/null 2>&1 && break
  kill -0 $orchestrator 2>/dev/null || { tail -5 "$errors"; exit 1; }
  sleep 0.1
done
echo "quickstart: orchestrator running until you leave the chat (its log: clawpen logs -f)"
clawpen chat --config "$config"
