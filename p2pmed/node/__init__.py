"""The p2pmed node: asyncio glue around the sans-IO session core."""

from p2pmed.node.config import ConfigError, NodeConfig
from p2pmed.node.errors import NodeError
from p2pmed.node.node import Node
from p2pmed.node.output import Events

__all__ = ["ConfigError", "Events", "Node", "NodeConfig", "NodeError"]
