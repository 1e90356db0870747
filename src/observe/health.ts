// The standard gRPC health service (grpc.health.v1.Health, the gRPC project's grpc-health-check package) on a flow
// server or the relay: `hubble status` asks it for "hubble.server.Observer" before anything else, probes ask "".
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation, service as healthDefinition } from 'grpc-health-check';

/** The service name Hubble's server and relay report (and `hubble status` checks). */
export const OBSERVER_HEALTH_SERVICE = 'hubble.server.Observer';

export type ServingStatus = 'SERVING' | 'NOT_SERVING';

type Watch = grpc.ServerWritableStream<unknown, unknown>;

/** grpc.health.v1.Health as loaded by grpc-health-check (its own proto-loader), typed for grpc-js. */
export const healthService = healthDefinition as unknown as grpc.ServiceDefinition;

/** One status for the Observer service and for the server as a whole (""), as Hubble keeps them. */
export class HealthService {
  private readonly impl: HealthImplementation;
  private readonly watches = new Set<Watch>();
  private current: ServingStatus;
  private closed = false;

  constructor(initial: ServingStatus) {
    this.current = initial;
    this.impl = new HealthImplementation({ '': initial, [OBSERVER_HEALTH_SERVICE]: initial });
  }

  /** Registers Check/Watch/List on `server`; Watch streams are tracked so close() can end them. */
  addTo(server: grpc.Server): void {
    this.impl.addToServer({
      addService: (_def, handlers) => {
        const watch = handlers['watch'] as grpc.handleServerStreamingCall<unknown, unknown>;
        server.addService(healthService, {
          ...handlers,
          watch: (call: Watch) => {
            this.watches.add(call);
            const drop = (): void => {
              this.watches.delete(call);
            };
            call.on('cancelled', drop);
            call.on('close', drop);
            watch(call);
          },
        });
      },
    });
  }

  get status(): ServingStatus {
    return this.current;
  }

  /** Changes the status; watchers are told at once. Ignored once closed. */
  set(status: ServingStatus): void {
    if (this.closed || status === this.current) return;
    this.current = status;
    this.impl.setStatus('', status);
    this.impl.setStatus(OBSERVER_HEALTH_SERVICE, status);
  }

  /** Tells watchers NOT_SERVING and ends their streams, so the server can shut down without waiting on them. */
  close(): void {
    this.set('NOT_SERVING');
    this.closed = true;
    for (const call of this.watches) call.end();
    this.watches.clear();
  }
}
