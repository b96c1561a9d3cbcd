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

# The journey workflows upsert these (workflows/contract.py SEARCH_ATTRIBUTES); the registry
# counts enrollments per step through them. Creating one that exists fails: check first.
for attribute in EnishiJourneyId=Keyword EnishiJourneyVersion=Int EnishiStep=Keyword \
                 EnishiCustomerId=Keyword; do
  name="${attribute%%=*}"
  type="${attribute#*=}"
  if ! temporal operator search-attribute list --namespace "${NAMESPACE}" \
       --address "${TEMPORAL_ADDRESS}" | grep -qw "${name}"; then
    temporal operator search-attribute create --namespace "${NAMESPACE}" \
      --name "${name}" --type "${type}" --address "${TEMPORAL_ADDRESS}"
  fi
done
echo "namespace ${NAMESPACE} ready"
