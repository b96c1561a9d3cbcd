"""Wires the ingest service: settings → Kafka producer → gRPC server. Nothing else."""

from __future__ import annotations

import grpc

from enishi import kafka
from enishi.config import IngestSettings
from enishi.grpc_server import GrpcServer
from enishi.process import run
from enishi.v1 import ingest_service_pb2, ingest_service_pb2_grpc
from services.ingest.publisher import TouchpointPublisher
from services.ingest.servicer import IngestServicer

SERVICE_NAME = ingest_service_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name


async def main() -> None:
    settings = IngestSettings()
    producer = kafka.producer(settings, linger_ms=settings.kafka_linger_ms)
    await producer.start()
    servicer = IngestServicer(TouchpointPublisher(producer), batch_max=settings.ingest_batch_max)

    def add_servicers(server: grpc.aio.Server) -> list[str]:
        ingest_service_pb2_grpc.add_IngestServiceServicer_to_server(servicer, server)
        return [SERVICE_NAME]

    server = GrpcServer(settings, "ingest", add_servicers, on_shutdown=producer.stop)
    await server.serve()


if __name__ == "__main__":
    raise SystemExit(run(main, settings=IngestSettings(), service="ingest"))
