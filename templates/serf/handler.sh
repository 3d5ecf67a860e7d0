#!/bin/sh
# Rendered by `p2pu init` from {{ source }}. Serf runs this for p2pu's user events, member joins and queries
# (one handler at a time, payload on stdin); p2pu hands it to the agent's spool and returns.
exec {{ binary }} handle-event --config {{ source }}
