#!/usr/bin/env bash
# Set everything up and start clawpen: the orchestrator, plus a chat with your agent.
#
#   bash scripts/quickstart.sh
#
# Asks once for your Anthropic API key (or takes ANTHROPIC_API_KEY) and keeps it in clawpen's
# vault (`clawpen secrets`), never in the config file. ANTHROPIC_BASE_URL, if set, is the model
# endpoint. Without a key it starts the offline demo model, which echoes and runs `run: COMMAND`
# in the agent's container.
# TELEGRAM_BOT_TOKEN (and TELEGRAM_CHAT_ID to pair your chat) adds the Telegram channel.
# With a terminal, you get a chat prompt and the orchestrator stops when you leave it;
# without one, the orchestrator runs in the foreground.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh

echo "quickstart: building the agent image (the first build takes about a minute)"
clawpen image build

config=${CLAWPEN_CONFIG:-clawpen.yaml}
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
if [[ ! -f $config ]]; then
  echo "quickstart: writing $config"
  {
    echo "data_dir: ./clawpen-data"
    echo "model:"
    echo "  name: ${CLAWPEN_MODEL:-claude-sonnet-4-5}"
    echo "  base_url: env:ANTHROPIC_BASE_URL"
    echo "  api_key: secret:anthropic-api-key   # in the vault: clawpen secrets set anthropic-api-key"
    echo "agents:"
    echo "  - id: assistant"
    echo "    system_prompt: You are a helpful assistant."
    echo "channels:"
    echo "  cli: {}"
    if [[ -n ${TELEGRAM_BOT_TOKEN:-} ]]; then
      echo "  telegram:"
      echo "    token: env:TELEGRAM_BOT_TOKEN"
      if [[ -n ${TELEGRAM_CHAT_ID:-} ]]; then
        echo "pairings:"
        echo "  - channel: telegram:$TELEGRAM_CHAT_ID"
        echo "    agent: assistant"
      fi
    fi
  } >"$config"
fi

# The key: from ANTHROPIC_API_KEY, else the vault, else asked for once (hidden), else the demo.
store_key() { printf '%s' "$1" | clawpen secrets set anthropic-api-key --config "$config" 2>/dev/null; }
stored=$(clawpen secrets get anthropic-api-key --reveal --config "$config" 2>/dev/null || true)
if [[ -n ${ANTHROPIC_API_KEY:-} ]]; then
  [[ $stored == "$ANTHROPIC_API_KEY" ]] || store_key "$ANTHROPIC_API_KEY"
  stored=$ANTHROPIC_API_KEY
elif [[ ( -z $stored || $stored == demo-key ) && -t 0 ]]; then
  read -rsp "quickstart: your Anthropic API key (Enter for the offline demo): " typed; echo
  if [[ -n $typed ]]; then store_key "$typed"; stored=$typed; fi
fi
if [[ -z $stored || $stored == demo-key ]]; then
  [[ $stored == demo-key ]] || store_key demo-key
  export ANTHROPIC_BASE_URL=http://127.0.0.1:8765
  echo "quickstart: no Anthropic API key: using the offline demo model on :8765"
  echo "            (try: run: uname -a). Run this again with a key for a real Claude."
  clawpen demo-model --port 8765 --api-key demo-key >/dev/null 2>&1 &
  pids+=($!)
fi
unset stored typed
export ANTHROPIC_BASE_URL=${ANTHROPIC_BASE_URL:-https://api.anthropic.com}
clawpen check --config "$config"

if [[ ! -t 0 ]]; then
  clawpen run --config "$config"
  exit
fi
mkdir -p clawpen-data
clawpen run --config "$config" >>clawpen-data/orchestrator.log 2>&1 &
orchestrator=$!
pids+=($orchestrator)
for _ in $(seq 100); do
  [[ -S clawpen-data/admin.sock ]] && break
  kill -0 $orchestrator 2>/dev/null || { tail -5 clawpen-data/orchestrator.log; exit 1; }
  sleep 0.1
done
echo "quickstart: orchestrator running (logs: clawpen-data/orchestrator.log)"
clawpen chat --config "$config"
