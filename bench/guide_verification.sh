#!/usr/bin/env bash
# The guide's own verification, scripted the way a user would: kubectl for the
# Ingress address, the AWS CLI for the load balancer, its target groups, their
# attributes and health, and curl with a cookie jar. Prints how many facts it
# checked; exits non-zero when one does not hold.
set -euo pipefail
ingress="${1:-scalardb-graphql}"; url="$2"
facts=0
fact() { facts=$((facts + 1)); }
host=$(kubectl get ingress "$ingress" -o jsonpath='{.status.loadBalancer.ingress[0].hostname}')
[ -n "$host" ]; fact
lb=$(aws elbv2 describe-load-balancers --query "LoadBalancers[?DNSName=='$host'] | [0]" --output json)
[ "$(jq -r .State.Code <<<"$lb")" = active ]; fact
[ "$(jq -r .Scheme <<<"$lb")" = internal ]; fact
arn=$(jq -r .LoadBalancerArn <<<"$lb")
for tg in $(aws elbv2 describe-target-groups --load-balancer-arn "$arn" --query 'TargetGroups[].TargetGroupArn' --output text); do
  attrs=$(aws elbv2 describe-target-group-attributes --target-group-arn "$tg" --output json)
  [ "$(jq -r '.Attributes[] | select(.Key=="stickiness.enabled") | .Value' <<<"$attrs")" = true ]; fact
  [ "$(jq -r '.Attributes[] | select(.Key=="stickiness.type") | .Value' <<<"$attrs")" = lb_cookie ]; fact
  [ -z "$(aws elbv2 describe-target-health --target-group-arn "$tg" --query 'TargetHealthDescriptions[?TargetHealth.State!=`healthy`]' --output text)" ]; fact
done
jar=$(mktemp); trap 'rm -f "$jar"' EXIT
body=$(curl -sf -c "$jar" -H 'Content-Type: application/graphql' --data '{__typename}' "$url/graphql"); fact
[ "$body" = '{"data": {"__typename": "Query"}}' ] || [ "$body" = '{"data":{"__typename":"Query"}}' ]; fact
grep -q AWSALB "$jar"; fact
echo "facts verified: $facts"
