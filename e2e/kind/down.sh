#!/usr/bin/env bash
# Deletes the kind cluster from up.sh (and everything in it).
source "$(dirname "$0")/common.sh"
need kind
kind delete cluster --name "$CLUSTER"
