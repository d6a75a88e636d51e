// One direction of a VNet peering; main.bicep deploys it twice (primary -> secondary and back) when the
// secondary region is enabled, so the secondary cluster reaches the primary region's private endpoints.

@description('Name of the local virtual network (in this module\'s resource group).')
@minLength(2)
@maxLength(64)
param localVnetName string

@description('Resource ID of the remote virtual network.')
@minLength(1)
param remoteVnetId string

@description('Name of the peering.')
@minLength(1)
@maxLength(80)
param peeringName string

resource localVnet 'Microsoft.Network/virtualNetworks@2024-05-01' existing = {
  name: localVnetName
}

resource peering 'Microsoft.Network/virtualNetworks/virtualNetworkPeerings@2024-05-01' = {
  parent: localVnet
  name: peeringName
  properties: {
    remoteVirtualNetwork: {
      id: remoteVnetId
    }
    allowVirtualNetworkAccess: true
    allowForwardedTraffic: false
    allowGatewayTransit: false
    useRemoteGateways: false
  }
}

@description('Resource ID of the peering.')
output peeringId string = peering.id
