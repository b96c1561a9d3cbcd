#!/bin/sh
# One-shot: make sure the Temporal namespace enishi uses exists (idempotent).
set -eu

: "${TEMPORAL_ADDRESS:?}"
NAMESPACE="${NAMESPACE:-default}"
RETENTION="${RETENTION:-72h}"

until temporal operator cluster health --address "${TEMPORAL_ADDRESS}"; do
  echo "waiting for Temporal at ${TEMPORAL_ADDRESS}"
  sleep 2
done

temporal operator namespace describe --namespace "${NAMESPACE}" --address "${TEMPORAL_ADDRESS}" \
  || temporal operator namespace create --namespace "${NAMESPACE}" --retention "${RETENTION}" \
       --address "${TEMPORAL_ADDRESS}"
echo "namespace ${NAMESPACE} ready"
