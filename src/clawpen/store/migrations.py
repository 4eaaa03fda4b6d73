"""The store's schema, as the migrations that build it: each runs once, in order, in one
transaction, and ``PRAGMA user_version`` remembers how far a database has come. Never edit one
that has shipped; add the next.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    """
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        channel TEXT NOT NULL,
        chat_id TEXT NOT NULL,
        sender_id TEXT NOT NULL,
        platform_id TEXT NOT NULL,
        text TEXT NOT NULL,
        received_at REAL NOT NULL,
        status TEXT NOT NULL,            -- queued | claimed | answered | rejected
        agent_id TEXT,
        reason TEXT,
        task_id INTEGER,
        UNIQUE (channel, chat_id, platform_id)
    );
    CREATE INDEX messages_queue ON messages (agent_id, status, id);
    CREATE TABLE tasks (
        id INTEGER PRIMARY KEY,
        agent_id TEXT NOT NULL,
        channel TEXT NOT NULL,
        chat_id TEXT NOT NULL,
        status TEXT NOT NULL,            -- running | done | failed
        attempts INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL,
        finished_at REAL,
        error TEXT
    );
    CREATE TABLE replies (
        id INTEGER PRIMARY KEY,
        task_id INTEGER NOT NULL UNIQUE,
        channel TEXT NOT NULL,
        chat_id TEXT NOT NULL,
        text TEXT NOT NULL,
        status TEXT NOT NULL,            -- pending | sent | failed
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        sent_at REAL,
        platform_ids TEXT,
        error TEXT
    );
    CREATE INDEX replies_pending ON replies (status, id);
    CREATE TABLE agents (
        id TEXT PRIMARY KEY,
        container_id TEXT,
        state TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE usage (
        id INTEGER PRIMARY KEY,
        agent_id TEXT NOT NULL,
        model TEXT NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        at REAL NOT NULL
    );
    CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: replies are delivered chunk by chunk, each recorded as the platform confirms it
    """
    ALTER TABLE replies ADD COLUMN chunks_sent INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX usage_by_agent ON usage (agent_id, at);
    """,
    # 3: pairings live here; the config file's are restored at every start
    """
    CREATE TABLE pairings (
        address TEXT PRIMARY KEY,        -- channel:chat_id
        agent_id TEXT NOT NULL,
        source TEXT NOT NULL,            -- config | cli
        created_at REAL NOT NULL
    );
    """,
    # 4: Telegram keeps unconfirmed updates itself; its offset needs no storage here
    """
    DROP TABLE kv;
    """,
    # 5: a conversation is an address (channel, chat, thread); claimed work has an owner and a
    #    lease; replies are due at next_attempt_at; strangers are kept as metadata, never text
    """
    ALTER TABLE messages ADD COLUMN thread TEXT NOT NULL DEFAULT '';
    ALTER TABLE messages ADD COLUMN reply_to TEXT NOT NULL DEFAULT '';
    ALTER TABLE tasks ADD COLUMN thread TEXT NOT NULL DEFAULT '';
    ALTER TABLE tasks ADD COLUMN reply_to TEXT NOT NULL DEFAULT '';
    ALTER TABLE tasks ADD COLUMN owner TEXT;
    ALTER TABLE tasks ADD COLUMN lease_until REAL NOT NULL DEFAULT 0;
    ALTER TABLE tasks ADD COLUMN resumes INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX tasks_by_agent ON tasks (agent_id, status, id);
    ALTER TABLE replies ADD COLUMN thread TEXT NOT NULL DEFAULT '';
    ALTER TABLE replies ADD COLUMN reply_to TEXT NOT NULL DEFAULT '';
    ALTER TABLE replies ADD COLUMN next_attempt_at REAL NOT NULL DEFAULT 0;
    ALTER TABLE replies ADD COLUMN owner TEXT;
    ALTER TABLE replies ADD COLUMN lease_until REAL NOT NULL DEFAULT 0;
    DROP INDEX replies_pending;
    CREATE INDEX replies_pending ON replies (channel, status, id);
    CREATE TABLE strangers (
        id INTEGER PRIMARY KEY,
        channel TEXT NOT NULL,
        chat_id TEXT NOT NULL,
        sender_id TEXT NOT NULL,
        size INTEGER NOT NULL,           -- characters of text; the text itself is not kept
        received_at REAL NOT NULL
    );
    CREATE INDEX strangers_by_time ON strangers (received_at);
    INSERT INTO strangers (channel, chat_id, sender_id, size, received_at)
        SELECT channel, chat_id, sender_id, length(text), received_at FROM messages
        WHERE status = 'rejected' AND task_id IS NULL;
    DELETE FROM messages WHERE status = 'rejected' AND task_id IS NULL;
    """,
    # 6: files sent with a message, kept until the agent has them in its workspace
    """
    CREATE TABLE files (
        id INTEGER PRIMARY KEY,
        message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        media_type TEXT NOT NULL,
        data BLOB NOT NULL
    );
    CREATE INDEX files_by_message ON files (message_id);
    """,
    # 7: what a platform says later about a sent message (delivered, read, failed)
    """
    CREATE TABLE delivery_statuses (
        channel TEXT NOT NULL,
        chat_id TEXT NOT NULL,
        platform_id TEXT NOT NULL,       -- the id the platform gave the sent message
        status TEXT NOT NULL,            -- sent | delivered | read | failed
        error TEXT NOT NULL DEFAULT '',
        window_closed INTEGER NOT NULL DEFAULT 0,
        updated_at REAL NOT NULL,
        PRIMARY KEY (channel, chat_id, platform_id)
    );
    CREATE INDEX delivery_failures ON delivery_statuses (status, updated_at);
    """,
    # 8: one-time pairing codes, kept as hashes, for chats that asked to be paired
    """
    CREATE TABLE pairing_codes (
        code_hash TEXT PRIMARY KEY,
        chat TEXT NOT NULL,              -- channel:chat
        sender_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        agent_id TEXT,                   -- set when approved
        approved_at REAL
    );
    CREATE INDEX pairing_codes_by_chat ON pairing_codes (chat, created_at);
    """,
    # 9: scheduled jobs and their runs: a run is queued as a message of the job's own conversation
    # (channel 'job', chat = the job's name), and answered to deliver_to, snapshotted per run
    """
    CREATE TABLE jobs (
        name TEXT PRIMARY KEY,
        agent_id TEXT NOT NULL,
        kind TEXT NOT NULL,              -- cron | every | at
        spec TEXT NOT NULL,
        timezone TEXT NOT NULL,
        task TEXT NOT NULL,
        deliver_channel TEXT NOT NULL,
        deliver_chat TEXT NOT NULL,
        deliver_thread TEXT NOT NULL DEFAULT '',
        misfire TEXT NOT NULL,           -- run_once | skip
        max_failures INTEGER NOT NULL,
        source TEXT NOT NULL,            -- config | cli | agent
        state TEXT NOT NULL,             -- active | paused | done
        next_run REAL,                   -- UTC epoch; NULL once an `at` job has run
        failures INTEGER NOT NULL DEFAULT 0,
        running_run INTEGER,             -- the run queued or in progress: no second one
        paused_reason TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL
    );
    CREATE INDEX jobs_due ON jobs (state, next_run);
    CREATE TABLE job_runs (
        id INTEGER PRIMARY KEY,
        job TEXT NOT NULL,
        message_id INTEGER,
        scheduled_for REAL NOT NULL,
        fired_at REAL NOT NULL,
        status TEXT NOT NULL,            -- running | ok | failed | skipped
        error TEXT NOT NULL DEFAULT '',
        finished_at REAL,
        manual INTEGER NOT NULL DEFAULT 0,
        deliver_channel TEXT NOT NULL,
        deliver_chat TEXT NOT NULL,
        deliver_thread TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX job_runs_by_job ON job_runs (job, id);
    CREATE INDEX job_runs_by_message ON job_runs (message_id);
    """,
    # 10: spending: what each model call cost, and whether its usage was only estimated
    """
    ALTER TABLE usage ADD COLUMN cost_usd REAL NOT NULL DEFAULT 0;
    ALTER TABLE usage ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0;
    """,
    # 11: sessions: one conversation per chat; /new moves a chat to the next number (the agent
    # starts afresh when a task's number is not its file's)
    """
    CREATE TABLE sessions (
        agent_id TEXT NOT NULL,
        conversation TEXT NOT NULL,
        number INTEGER NOT NULL,
        started_at REAL NOT NULL,
        PRIMARY KEY (agent_id, conversation)
    );
    """,
    # 12: job names are per agent (issue 23): alpha's "daily" and beta's "daily" are two jobs,
    # and a clash tells an agent nothing of another's. A run names its agent too.
    """
    CREATE TABLE jobs_per_agent (
        name TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        spec TEXT NOT NULL,
        timezone TEXT NOT NULL,
        task TEXT NOT NULL,
        deliver_channel TEXT NOT NULL,
        deliver_chat TEXT NOT NULL,
        deliver_thread TEXT NOT NULL DEFAULT '',
        misfire TEXT NOT NULL,
        max_failures INTEGER NOT NULL,
        source TEXT NOT NULL,
        state TEXT NOT NULL,
        next_run REAL,
        failures INTEGER NOT NULL DEFAULT 0,
        running_run INTEGER,
        paused_reason TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        PRIMARY KEY (agent_id, name)
    );
    INSERT INTO jobs_per_agent (name, agent_id, kind, spec, timezone, task, deliver_channel,
        deliver_chat, deliver_thread, misfire, max_failures, source, state, next_run, failures,
        running_run, paused_reason, created_at)
        SELECT name, agent_id, kind, spec, timezone, task, deliver_channel, deliver_chat,
        deliver_thread, misfire, max_failures, source, state, next_run, failures, running_run,
        paused_reason, created_at FROM jobs;
    DROP TABLE jobs;
    ALTER TABLE jobs_per_agent RENAME TO jobs;
    CREATE INDEX jobs_due ON jobs (state, next_run);
    ALTER TABLE job_runs ADD COLUMN agent_id TEXT NOT NULL DEFAULT '';
    UPDATE job_runs SET agent_id = coalesce(
        (SELECT agent_id FROM jobs WHERE jobs.name = job_runs.job), '');
    DROP INDEX job_runs_by_job;
    CREATE INDEX job_runs_by_job ON job_runs (agent_id, job, id);
    """,
    # 13: a reply is claimed for one delivery before each send (claim: that delivery's token), so
    # a stale read can never send a chunk twice; replies to strangers (pairing codes) are paced
    # on a budget of their own, after the paired chats'
    """
    ALTER TABLE replies ADD COLUMN claim TEXT;
    ALTER TABLE replies ADD COLUMN stranger INTEGER NOT NULL DEFAULT 0;
    """,
    # 14 (approvals): requests waiting for a person's tap (issue 18), bound to the exact action by
    # its hash; the cards sent for them (replies with buttons); the hosts an agent may reach
    # from now on because someone said so
    """
    CREATE TABLE approvals (
        id INTEGER PRIMARY KEY,
        code TEXT NOT NULL UNIQUE,       -- in the buttons' data: ok-CODE, al-CODE, no-CODE
        agent_id TEXT NOT NULL,
        task_id INTEGER,                 -- the task that asked (a re-run finds its request)
        kind TEXT NOT NULL,              -- send_message | web_fetch | egress | jobs | mounts
        args TEXT NOT NULL,              -- canonical JSON of the action's arguments
        action_hash TEXT NOT NULL,       -- sha256 of agent, kind and args
        summary TEXT NOT NULL,           -- what the card says
        chat TEXT NOT NULL,              -- the conversation the task came from
        approvers TEXT NOT NULL,         -- JSON list of chat addresses that may decide
        status TEXT NOT NULL,            -- pending | allowed | denied | expired
        choice TEXT NOT NULL DEFAULT '', -- once | always (egress: from now on)
        decided_by TEXT NOT NULL DEFAULT '',
        how TEXT NOT NULL DEFAULT '',    -- tap | code | cli | dashboard | timeout
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        decided_at REAL,
        used_at REAL                     -- carried out (once)
    );
    CREATE INDEX approvals_by_action ON approvals (agent_id, task_id, action_hash);
    CREATE INDEX approvals_pending ON approvals (status, expires_at);
    CREATE TABLE approval_cards (
        approval_id INTEGER NOT NULL,
        reply_id INTEGER NOT NULL,
        PRIMARY KEY (approval_id, reply_id)
    );
    CREATE TABLE egress_allowed (
        agent_id TEXT NOT NULL,
        host_port TEXT NOT NULL,
        approval_id INTEGER,
        created_at REAL NOT NULL,
        PRIMARY KEY (agent_id, host_port)
    );
    ALTER TABLE replies ADD COLUMN buttons TEXT NOT NULL DEFAULT '';
    """,
    # 15 (files): a file an agent sends back (send_file) is a reply of its own (its caption the
    # text), delivered by the outbox in order with the chat's other replies; its bytes wait in
    # reply_files until the platform has them; a task taken over after a crash that sends the
    # same file again finds it committed already
    """
    ALTER TABLE replies ADD COLUMN has_file INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE reply_files (
        reply_id INTEGER PRIMARY KEY REFERENCES replies (id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        media_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        data BLOB NOT NULL,              -- emptied once the platform confirmed the file
        once TEXT UNIQUE                 -- task and content: a resumed task sends it once
    );
    """,
]
