"""The rig's AWS account: moto's server, seeded with an EKS cluster and its VPC.

One port serves every AWS service moto implements (IAM, EC2, ELBv2, EKS,
STS) plus moto's own API (`/moto-api/reset`, `/moto-api/recorder/...`). The
rig adds `POST /rig/reset`: reset moto, then seed again (with moto's random
generator seeded, so identifiers repeat), so a test starts from the same
account every time.

The seed is what an EKS cluster made by eksctl looks like: a VPC with two
private and two public subnets in two availability zones, the public ones
routed through an internet gateway and tagged for internet-facing load
balancers, the cluster's `resourcesVpcConfig` listing all four. The
cluster's endpoint and certificate authority are set to the rig's own
kube-apiserver, so "this kube context is that EKS cluster" holds.

usage: aws_server.py PORT CLUSTER_NAME KUBE_SERVER_URL CA_FILE
"""

import base64
import os
import sys
import threading

import boto3
from moto.backends import get_backend
from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_api._internal import mock_random, moto_api_backend
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server
from werkzeug.wrappers import Response

REGION = "us-east-1"
ZONES = ["us-east-1a", "us-east-1b"]


def seed(port, cluster_name, kube_server, ca_pem):
    def client(service):
        return boto3.client(service, region_name=REGION, endpoint_url=f"http://127.0.0.1:{port}",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    ec2 = client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.create_tags(Resources=[vpc], Tags=[{"Key": "Name", "Value": f"{cluster_name}-vpc"}])
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    public_rt = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=public_rt, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    private_rt = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    subnets = []
    for i, zone in enumerate(ZONES):
        for kind, cidr, table in (("private", f"10.0.{i + 1}.0/24", private_rt),
                                  ("public", f"10.0.{101 + i}.0/24", public_rt)):
            subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=zone)["Subnet"]["SubnetId"]
            ec2.associate_route_table(RouteTableId=table, SubnetId=subnet)
            tags = [{"Key": "Name", "Value": f"{cluster_name}-{kind}-{zone}"},
                    {"Key": f"kubernetes.io/cluster/{cluster_name}", "Value": "shared"}]
            if kind == "public":
                tags.append({"Key": "kubernetes.io/role/elb", "Value": "1"})
            ec2.create_tags(Resources=[subnet], Tags=tags)
            subnets.append(subnet)
    client("eks").create_cluster(
        name=cluster_name, version="1.35",
        roleArn=f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:role/{cluster_name}-cluster-role",
        resourcesVpcConfig={"subnetIds": subnets})
    # Not settable through the API: point the cluster at the rig's kube-apiserver.
    cluster = get_backend("eks")[DEFAULT_ACCOUNT_ID][REGION].clusters[cluster_name]
    cluster.endpoint = kube_server
    cluster.certificate_authority = {"data": base64.b64encode(ca_pem).decode()}
    cluster.resources_vpc_config = dict(cluster.resources_vpc_config, vpcId=vpc)


def main():
    port, cluster_name, kube_server, ca_file = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    with open(ca_file, "rb") as f:
        ca_pem = f.read()
    moto_app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def reset():
        with lock:
            moto_api_backend.reset()
            # The same identifiers after every reset: subnets, VPC, the OIDC issuer.
            mock_random.seed(42)
            seed(port, cluster_name, kube_server, ca_pem)

    def app(environ, start_response):
        if environ.get("PATH_INFO") == "/rig/reset" and environ.get("REQUEST_METHOD") == "POST":
            reset()
            return Response("reset\n")(environ, start_response)
        return moto_app(environ, start_response)

    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=reset, daemon=True).start()
    print(f"aws: serving on 127.0.0.1:{port} (pid {os.getpid()})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
