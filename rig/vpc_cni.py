"""The Amazon VPC CNI's part of the rig: every running pod's IP is a secondary private address
of its node's network interface, and that interface carries the cluster's security group, as
on EKS. The ALB's health checks (aws_server.py) pass only through the security groups of the
interface that holds the target's address, and the controller adds its rule to the one group
there tagged `kubernetes.io/cluster/<name>` (or the only one).

Simpler than EKS: one interface per node, made when a pod first lands there, in the cluster's
first private subnet; addresses come from kwok (or the pod runner), not from
the subnet; a node's interface stays after the node goes. The interfaces are the AWS account's
(administrator keys), not the controller's.
"""

DESCRIPTION_PREFIX = "aws-K8S-"


class VpcCni:
    def __init__(self, ec2, eks, cluster):
        self.ec2, self.eks, self.cluster = ec2, eks, cluster

    def cluster_security_group(self):
        config = self.eks.describe_cluster(name=self.cluster)["cluster"]["resourcesVpcConfig"]
        return config.get("clusterSecurityGroupId"), config.get("vpcId"), config.get("subnetIds") or []

    def private_subnet(self, subnet_ids):
        subnets = self.ec2.describe_subnets(SubnetIds=subnet_ids)["Subnets"] if subnet_ids else []
        private = [s for s in subnets if not any(t["Key"] == "kubernetes.io/role/elb" for t in s.get("Tags") or [])]
        ranked = sorted(private or subnets, key=lambda s: s["CidrBlock"])
        return ranked[0]["SubnetId"] if ranked else None

    def sync(self, pods):
        """Assigns each running pod's IP to its node's interface, and takes back the others."""
        wanted = {}
        for pod in pods:
            status, spec = pod.get("status") or {}, pod["spec"]
            if spec.get("hostNetwork") or not status.get("podIP") or not spec.get("nodeName") \
                    or status.get("phase") not in ("Pending", "Running"):
                continue
            wanted.setdefault(spec["nodeName"], set()).add(status["podIP"])
        enis = {e["Description"][len(DESCRIPTION_PREFIX):]: e
                for e in self.ec2.describe_network_interfaces()["NetworkInterfaces"]
                if (e.get("Description") or "").startswith(DESCRIPTION_PREFIX)}
        context = None
        for node, ips in wanted.items():
            eni = enis.get(node)
            if eni is None:
                context = context or self.cluster_security_group()
                group, _, subnet_ids = context
                subnet = self.private_subnet(subnet_ids)
                if subnet is None or group is None:
                    continue
                eni = self.ec2.create_network_interface(
                    SubnetId=subnet, Groups=[group], Description=DESCRIPTION_PREFIX + node)["NetworkInterface"]
                enis[node] = eni
            have = {a["PrivateIpAddress"] for a in eni["PrivateIpAddresses"] if not a.get("Primary")}
            if ips - have:
                self.ec2.assign_private_ip_addresses(NetworkInterfaceId=eni["NetworkInterfaceId"],
                                                     PrivateIpAddresses=sorted(ips - have))
        for node, eni in enis.items():
            gone = {a["PrivateIpAddress"] for a in eni["PrivateIpAddresses"] if not a.get("Primary")} - \
                wanted.get(node, set())
            if gone:
                self.ec2.unassign_private_ip_addresses(NetworkInterfaceId=eni["NetworkInterfaceId"],
                                                       PrivateIpAddresses=sorted(gone))
