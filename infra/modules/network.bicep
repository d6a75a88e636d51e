// Regional virtual network: AKS node subnet, private-endpoint subnet and the API Management subnet, each with an NSG.
// AKS uses Azure CNI overlay, so pods do not consume VNet addresses; the node subnet only needs room for nodes.

@description('Name of the virtual network.')
@minLength(2)
@maxLength(64)
param name string

@description('Azure region of the virtual network.')
@minLength(3)
param location string

@description('Tags applied to every resource.')
param tags object = {}

@description('Address space of the virtual network (a /16 leaves room for every subnet below).')
param addressPrefix string = '10.20.0.0/16'

@description('Service tag allowed to reach the API Management gateway on 443: Internet (main.bicep), or AzureFrontDoor.Backend behind a Front Door of your own.')
@allowed([
  'Internet'
  'AzureFrontDoor.Backend'
])
param apimInboundSourceTag string = 'Internet'

@description('Prefix of the AKS node subnet (overlay networking: only nodes take addresses).')
@minLength(9)
param nodeSubnetPrefix string = '10.20.0.0/20'

@description('Prefix of the private-endpoint subnet.')
@minLength(9)
param privateEndpointSubnetPrefix string = '10.20.16.0/24'

@description('Prefix of the API Management subnet.')
@minLength(9)
param apimSubnetPrefix string = '10.20.17.0/24'

resource nodeNsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: 'nsg-${name}-aks-nodes'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource privateEndpointNsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: 'nsg-${name}-private-endpoints'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

// Rules API Management needs when injected into a VNet in External mode.
resource apimNsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: 'nsg-${name}-apim'
  location: location
  tags: tags
  properties: {
    securityRules: [
      {
        name: 'allow-https-gateway'
        properties: {
          priority: 100
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: apimInboundSourceTag
          sourcePortRange: '*'
          destinationAddressPrefix: 'VirtualNetwork'
          destinationPortRange: '443'
        }
      }
      {
        name: 'allow-apim-management'
        properties: {
          priority: 110
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: 'ApiManagement'
          sourcePortRange: '*'
          destinationAddressPrefix: 'VirtualNetwork'
          destinationPortRange: '3443'
        }
      }
      {
        name: 'allow-azure-load-balancer'
        properties: {
          priority: 120
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: 'AzureLoadBalancer'
          sourcePortRange: '*'
          destinationAddressPrefix: 'VirtualNetwork'
          destinationPortRange: '6390'
        }
      }
    ]
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: 'snet-aks-nodes'
        properties: {
          addressPrefix: nodeSubnetPrefix
          networkSecurityGroup: {
            id: nodeNsg.id
          }
        }
      }
      {
        name: 'snet-private-endpoints'
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          privateEndpointNetworkPolicies: 'Enabled'
          networkSecurityGroup: {
            id: privateEndpointNsg.id
          }
        }
      }
      {
        name: 'snet-apim'
        properties: {
          addressPrefix: apimSubnetPrefix
          networkSecurityGroup: {
            id: apimNsg.id
          }
        }
      }
    ]
  }
}

@description('Resource ID of the virtual network.')
output vnetId string = vnet.id

@description('Name of the virtual network.')
output vnetName string = vnet.name

@description('Resource ID of the AKS node subnet.')
output nodeSubnetId string = vnet.properties.subnets[0].id

@description('Resource ID of the private-endpoint subnet.')
output privateEndpointSubnetId string = vnet.properties.subnets[1].id

@description('Resource ID of the API Management subnet.')
output apimSubnetId string = vnet.properties.subnets[2].id
