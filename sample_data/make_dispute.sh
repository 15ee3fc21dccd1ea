#!/bin/sh
# Rebuild sample_data/dispute_export.json with real coopctl commands at fixed times, so that the
# file is reproducible byte for byte:  sh sample_data/make_dispute.sh
#
# Two orders that ended up with support staff:
#   1. a live stream whose delivery the merchant failed twice; the creator made up once, then
#      let the make-up window run out, and `tick` escalated the order to `disputed`;
#   2. a short video the creator asked to cancel; the merchant never answered, so the request
#      ran out and the order was cancelled unilaterally, with the creator (the requester) liable.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out="$here/dispute_export.json"
coopctl=${COOPCTL:-coopctl}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"                       # no ./coopctl.toml here: the default policy and Asia/Shanghai
unset COOPCTL_CONFIG COOPCTL_OPERATOR
export COOPCTL_DB="$work/dispute.db"

c() { "$coopctl" "$@" >/dev/null; }

tick() { "$coopctl" --operator cron tick --now "$1" >/dev/null; }   # what cron did every minute

# Everything in the order it happened (times in Asia/Shanghai).
c --operator ops-zhang create --merchant 商家A-美妆旗舰店 --creator 达人小王 --product P1001-口红套装 \
  --form live --commission 12.5 --ad-budget 5000 --latest-start 2026-11-10T20:00 \
  --note "双十一直播专场" --at 2026-11-01T10:00                                              # order 1
c --operator app-creator accept 1 --creator 达人小王 --at 2026-11-02T09:00
c --operator ops-li create --merchant 商家B-零食铺子 --creator 达人阿珍 --product P2001-坚果礼盒 \
  --form video --commission 20 --ad-budget 800 --latest-start 2026-11-20T12:00 --at 2026-11-03T14:00  # order 2
c --operator app-creator accept 2 --creator 达人阿珍 --at 2026-11-04T10:00
tick 2026-11-05T00:00
c --operator app-creator cancel-request 2 --creator 达人阿珍 --reason "档期冲突" --at 2026-11-06T18:00
c --operator app-creator go-live 1 --creator 达人小王 --at 2026-11-08T20:00
c --operator app-creator deliver 1 --creator 达人小王 --evidence https://v.douyin.com/live-1108 --at 2026-11-08T23:30
tick 2026-11-09T00:00          # order 2: nobody answered the cancellation within 48h
tick 2026-11-21T00:00          # order 1: reminds the merchant that the review window closes soon
c --operator app-merchant review 1 --merchant 商家A-美妆旗舰店 --fail --reason "口红色号讲错，优惠券未展示" --at 2026-11-21T10:00
c --operator app-creator deliver 1 --creator 达人小王 --evidence "补播 https://v.douyin.com/makeup-1124" --at 2026-11-24T21:00
c --operator app-merchant review 1 --merchant 商家A-美妆旗舰店 --fail --reason "补播时长不足10分钟" --at 2026-11-26T11:00
tick 2026-12-04T00:00          # order 1: no second make-up within 7 days: escalated to dispute

"$coopctl" export --all --at 2026-12-04T09:00 --out "$out"
