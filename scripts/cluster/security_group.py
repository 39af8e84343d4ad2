"""Make or update the security group of cluster.yaml's nodes: SSH (22) from one CIDR and all
traffic between the group's own members, no other ingress; prints the group's id.

    python scripts/cluster/security_group.py --ssh-cidr 203.0.113.7/32
    python scripts/cluster/security_group.py --ssh-cidr 198.51.100.0/24 --region us-east-1

Put the id into cluster.yaml (`SecurityGroupIds` of the head, which every node type shares).
Ray's own group is not used: Ray opens SSH to the whole internet in any group it creates.
Run again with another CIDR to move the SSH rule: ingress rules other than the two are
revoked. A CIDR of the whole internet (a /0) is refused. Needs boto3 and AWS credentials, as
`ray up` does.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import Any

import boto3

DEFAULT_NAME = "pix2seqd-cluster"
DEFAULT_REGION = "us-west-2"  # cluster.yaml's provider.region

# one ingress rule as (protocol, from port, to port, source kind, source)
Rule = tuple[str, int, int, str, str]


def checked_cidr(text: str) -> str:
    """`text` as a network (host bits must be zero); ValueError for a /0 or a malformed one."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as err:
        raise ValueError(f"--ssh-cidr {text!r}: {err}") from None
    if net.prefixlen == 0:
        raise ValueError(
            f"--ssh-cidr {text!r} is the whole internet; give your own address or network, "
            "e.g. $(curl -s https://checkip.amazonaws.com)/32"
        )
    return str(net)


def wanted_rules(group_id: str, cidr: str) -> set[Rule]:
    kind = "cidr6" if ipaddress.ip_network(cidr).version == 6 else "cidr"
    return {("tcp", 22, 22, kind, cidr), ("-1", -1, -1, "group", group_id)}


def current_rules(permissions: list[dict[str, Any]]) -> set[Rule]:
    """The group's `IpPermissions`, one rule per source."""
    rules = set()
    for p in permissions:
        head = (p["IpProtocol"], p.get("FromPort", -1), p.get("ToPort", -1))
        rules |= {(*head, "cidr", r["CidrIp"]) for r in p.get("IpRanges", [])}
        rules |= {(*head, "cidr6", r["CidrIpv6"]) for r in p.get("Ipv6Ranges", [])}
        rules |= {(*head, "group", g["GroupId"]) for g in p.get("UserIdGroupPairs", [])}
        rules |= {(*head, "prefix", x["PrefixListId"]) for x in p.get("PrefixListIds", [])}
    return rules


def as_permission(rule: Rule) -> dict[str, Any]:
    protocol, low, high, kind, source = rule
    perm: dict[str, Any] = {"IpProtocol": protocol}
    if protocol != "-1":
        perm.update(FromPort=low, ToPort=high)
    key, field = {
        "cidr": ("IpRanges", "CidrIp"),
        "cidr6": ("Ipv6Ranges", "CidrIpv6"),
        "group": ("UserIdGroupPairs", "GroupId"),
        "prefix": ("PrefixListIds", "PrefixListId"),
    }[kind]
    perm[key] = [{field: source}]
    return perm


def default_vpc(ec2) -> str:
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise SystemExit("this region has no default VPC; pass --vpc-id")
    return vpcs[0]["VpcId"]


def ensure_group(ec2, name: str, ssh_cidr: str, vpc_id: str) -> str:
    """The group `name` in `vpc_id` with exactly the two ingress rules; returns its id."""
    cidr = checked_cidr(ssh_cidr)
    filters = [{"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc_id]}]
    found = ec2.describe_security_groups(Filters=filters)["SecurityGroups"]
    if found:
        group_id, permissions = found[0]["GroupId"], found[0]["IpPermissions"]
    else:
        group_id = ec2.create_security_group(
            GroupName=name, Description="pix2seqd Ray cluster: SSH from one CIDR", VpcId=vpc_id
        )["GroupId"]
        permissions = []
    have, want = current_rules(permissions), wanted_rules(group_id, cidr)
    if have - want:
        ec2.revoke_security_group_ingress(
            GroupId=group_id, IpPermissions=[as_permission(r) for r in sorted(have - want)]
        )
    if want - have:
        ec2.authorize_security_group_ingress(
            GroupId=group_id, IpPermissions=[as_permission(r) for r in sorted(want - have)]
        )
    return group_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ssh-cidr", required=True, help="who may SSH in, e.g. 203.0.113.7/32")
    parser.add_argument("--region", default=DEFAULT_REGION)
    parser.add_argument("--name", default=DEFAULT_NAME, help="the group's name")
    parser.add_argument("--vpc-id", default="", help="default: the region's default VPC")
    args = parser.parse_args(argv)
    try:
        checked_cidr(args.ssh_cidr)
    except ValueError as err:
        parser.error(str(err))
    ec2 = boto3.client("ec2", region_name=args.region)
    print(ensure_group(ec2, args.name, args.ssh_cidr, args.vpc_id or default_vpc(ec2)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
